//! The configuration's files, read by the binary (`chom-core` does no IO): the config file
//! itself (or the embedded default), and checks of the files around it: who may change the
//! commands it makes the node run, and the SSH files it names. The checks read the
//! filesystem, so they run where the files matter: `chom config check` and `chom node` start,
//! not every admin command.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use chom_core::config::{Config, ConfigError, ConfigErrors, DEFAULT_TOML, SshConfig};

/// Loads the file at `path`, or the embedded default ([`DEFAULT_TOML`]) when `None`, with
/// environment overrides; a file that cannot be read is reported as one error naming it.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Config, ConfigErrors> {
    let Some(path) = path else {
        return Config::from_toml_str(DEFAULT_TOML, env);
    };
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigErrors(vec![ConfigError {
            key: String::new(),
            env: None,
            message: format!("cannot read {}: {error}", path.display()),
        }])
    })?;
    Config::from_file_text(path, &text, env)
}

/// What [`check_files`] found. Errors make the configuration invalid (exit 78); warnings are
/// printed (or logged) and the node runs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// Problems that refuse the configuration.
    pub errors: Vec<ConfigError>,
    /// Problems worth a word that do not stop the node.
    pub warnings: Vec<ConfigError>,
}

fn problem(key: &str, message: String) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        env: None,
        message,
    }
}

/// Check the config file at `path` (when there is one) and the SSH files of `config`:
///
/// - a world-writable config file that defines commands is an error (anyone on the host
///   could make the node run theirs); group-writable is a warning;
/// - an `ssh.private_key` that is not a readable file is an error when the key is set (not
///   the default path, which a fresh install does not have yet: `chom node` must run
///   there), else a warning; a key every user may read is a warning;
/// - an unreadable `ssh.known_hosts` is an error when it is set and some `[[vps]]` entry
///   pins no `host_key` (that server could never be verified); otherwise a warning, since
///   servers with a pinned key never read it and only later unpinned additions need it.
pub fn check_files(config: &Config, path: Option<&Path>) -> FileReport {
    let mut report = FileReport::default();
    if let Some(path) = path {
        check_config_file(config, path, &mut report);
    }
    check_private_key(config, &mut report);
    check_known_hosts(config, &mut report);
    report
}

fn check_config_file(config: &Config, path: &Path, report: &mut FileReport) {
    let commands = config.command_keys();
    if commands.is_empty() {
        return;
    }
    let Ok(meta) = std::fs::metadata(path) else {
        return;
    };
    let mode = meta.permissions().mode() & 0o7777;
    let what = format!(
        "{} (mode {mode:04o}) defines commands the node runs ({})",
        path.display(),
        commands.join(", ")
    );
    if mode & 0o002 != 0 {
        report.errors.push(problem(
            "",
            format!("{what} and is world-writable: anyone on the host could change them; run chmod o-w on it"),
        ));
    } else if mode & 0o020 != 0 {
        report.warnings.push(problem(
            "",
            format!("{what} and is group-writable: every member of its group can change them"),
        ));
    }
}

fn check_private_key(config: &Config, report: &mut FileReport) {
    let key = &config.ssh.private_key;
    match readable_file(key) {
        Err(why) => {
            let message = format!(
                "cannot read {}: {why}; the node cannot log in to any server",
                key.display()
            );
            if *key == SshConfig::default().private_key {
                report.warnings.push(problem("ssh.private_key", message));
            } else {
                report.errors.push(problem("ssh.private_key", message));
            }
        }
        // Group access is how the documented install shares the key with the node's
        // group (0640 root:chom); access for everyone else is a leak.
        Ok(mode) if mode & 0o007 != 0 => report.warnings.push(problem(
            "ssh.private_key",
            format!(
                "{} (mode {mode:04o}) is open to every user on the host; run chmod o-rwx on it",
                key.display()
            ),
        )),
        Ok(_) => {}
    }
}

fn check_known_hosts(config: &Config, report: &mut FileReport) {
    let ssh = &config.ssh;
    let Err(why) = readable_file(&ssh.known_hosts) else {
        return;
    };
    let unpinned: Vec<&str> = config
        .vps
        .iter()
        .filter(|v| v.host_key.is_none())
        .map(|v| v.id.as_str())
        .collect();
    let base = format!("cannot read {}: {why}", ssh.known_hosts.display());
    if ssh.known_hosts != SshConfig::default().known_hosts && !unpinned.is_empty() {
        report.errors.push(problem(
            "ssh.known_hosts",
            format!(
                "{base}; servers without a pinned host_key ({}) could never be verified",
                unpinned.join(", ")
            ),
        ));
    } else {
        report.warnings.push(problem(
            "ssh.known_hosts",
            format!("{base}; servers without a pinned host_key will be refused"),
        ));
    }
}

/// The permission bits of `path` when it is a regular file this process can open.
fn readable_file(path: &Path) -> Result<u32, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".to_owned());
    }
    File::open(path).map_err(|e| e.to_string())?;
    Ok(meta.permissions().mode() & 0o7777)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chom_core::config::{HealthCheckConfig, VpsConfig};

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("chom-files-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn with_files(dir: &Path) -> Config {
        let mut config = Config::default();
        let key = dir.join("id");
        std::fs::write(&key, "k").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let known = dir.join("known_hosts");
        std::fs::write(&known, "").unwrap();
        config.ssh.private_key = key;
        config.ssh.known_hosts = known;
        config
    }

    #[test]
    fn a_missing_file_is_one_error_naming_it_and_none_is_the_embedded_default() {
        let missing = Path::new("/nonexistent/chom.toml");
        let errors = load(Some(missing), &[]).unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert!(
            errors.0[0]
                .message
                .starts_with("cannot read /nonexistent/chom.toml"),
            "{errors}"
        );
        assert_eq!(load(None, &[]).unwrap(), Config::default());
    }

    #[test]
    fn world_writable_file_with_commands_is_refused_group_writable_warned() {
        let dir = scratch("mode");
        let file = dir.join("chom.toml");
        std::fs::write(&file, "").unwrap();
        let mut config = with_files(&dir);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o666)).unwrap();
        // No commands: the mode does not matter.
        assert_eq!(check_files(&config, Some(&file)), FileReport::default());
        config.health.checks.push(HealthCheckConfig {
            name: "fpm".into(),
            command: Some("true".into()),
            url: None,
            remediation: Some("systemctl restart php-fpm".into()),
        });
        let report = check_files(&config, Some(&file));
        assert_eq!(report.errors.len(), 1, "{report:?}");
        let message = &report.errors[0].message;
        assert!(
            message.contains("chom.toml") && message.contains("0666"),
            "{message}"
        );
        assert!(
            message.contains("health.checks[0].remediation"),
            "{message}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let report = check_files(&config, Some(&file));
        assert!(
            report.errors.is_empty() && report.warnings.len() == 1,
            "{report:?}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(check_files(&config, Some(&file)), FileReport::default());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn missing_ssh_files_are_errors_when_configured_and_warnings_at_the_defaults() {
        let dir = scratch("ssh");
        let mut config = with_files(&dir);
        assert_eq!(check_files(&config, None), FileReport::default());
        config.ssh.private_key = dir.join("missing");
        let report = check_files(&config, None);
        assert_eq!(report.errors[0].key, "ssh.private_key", "{report:?}");
        // Group-readable is the documented install (0640 root:chom); world-readable is not.
        let shared = with_files(&dir);
        std::fs::set_permissions(
            &shared.ssh.private_key,
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        assert_eq!(check_files(&shared, None), FileReport::default());
        std::fs::set_permissions(
            &shared.ssh.private_key,
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        let report = check_files(&shared, None);
        assert_eq!(report.warnings[0].key, "ssh.private_key", "{report:?}");
        // A directory is not a key either.
        config.ssh.private_key = dir.clone();
        assert_eq!(check_files(&config, None).errors[0].key, "ssh.private_key");

        let mut config = with_files(&dir);
        config.ssh.known_hosts = dir.join("missing_known_hosts");
        let report = check_files(&config, None);
        assert!(
            report.errors.is_empty() && report.warnings.len() == 1,
            "{report:?}"
        );
        config.vps.push(VpsConfig::new("web-1", "10.0.0.1"));
        let report = check_files(&config, None);
        assert_eq!(report.errors[0].key, "ssh.known_hosts", "{report:?}");
        assert!(report.errors[0].message.contains("web-1"));
        config.vps[0].host_key = Some("SHA256:abc".into());
        assert!(check_files(&config, None).errors.is_empty());

        // The embedded defaults on a fresh machine: warnings only.
        let fresh = Config::default();
        if !fresh.ssh.private_key.exists() {
            let report = check_files(&fresh, None);
            assert!(report.errors.is_empty() && !report.warnings.is_empty());
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
