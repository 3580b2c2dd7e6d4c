//! The Debian package (`scripts/build-deb`), built from the binary this test run built
//! (`--debug --binary`, so no second compile) and read back with dpkg-deb: its name and control
//! fields, the exact file list with owners and modes, the conffile, the maintainer scripts, the
//! unit byte-identical to deploy/systemd/chom.service, and the shipped /etc/chom/chom.toml
//! accepted by `chom config check` with the production paths it promises.
//!
//! Installing it under systemd is scripts/test-deploy's job. dpkg-deb and dpkg-shlibdeps come
//! with dpkg-dev (build-essential); without them these tests fail rather than skip.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{CHOM, TempDir};
use serde_json::Value;

const UNIT: &[u8] = include_bytes!("../deploy/systemd/chom.service");
const CONFIG: &[u8] = include_bytes!("../deploy/debian/chom.toml");
const SYSTEMD_README: &[u8] = include_bytes!("../deploy/systemd/README.md");

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): install dpkg-dev"))
}

/// Runs `program args`, which must succeed; its stdout.
fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {args:?} ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The package version: Cargo's, with a pre-release's '-' as Debian's '~'.
fn deb_version() -> String {
    env!("CARGO_PKG_VERSION").replace('-', "~")
}

/// A package built into a temp dir, and its contents extracted beside it.
struct Built {
    dir: TempDir,
    deb: PathBuf,
}

impl Built {
    fn new() -> Built {
        let dir = TempDir::new("deb");
        let out = dir.path().join("out");
        let stdout = run_ok(
            repo("scripts/build-deb").to_str().unwrap(),
            &["--debug", "--binary", CHOM, "--out", out.to_str().unwrap()],
        );
        let arch = run_ok("dpkg", &["--print-architecture"]);
        let deb = out.join(format!("chom_{}_{}.deb", deb_version(), arch.trim()));
        assert_eq!(
            stdout.lines().last(),
            deb.to_str(),
            "the last line of build-deb is the package's path"
        );
        let root = dir.path().join("root");
        run_ok(
            "dpkg-deb",
            &["-x", deb.to_str().unwrap(), root.to_str().unwrap()],
        );
        run_ok(
            "dpkg-deb",
            &[
                "-e",
                deb.to_str().unwrap(),
                dir.path().join("control").to_str().unwrap(),
            ],
        );
        Built { dir, deb }
    }

    fn deb(&self) -> &str {
        self.deb.to_str().unwrap()
    }

    /// A file of the package as extracted, by its absolute installed path.
    fn file(&self, installed: &str) -> PathBuf {
        self.dir
            .path()
            .join("root")
            .join(installed.trim_start_matches('/'))
    }

    /// A control file (DEBIAN/NAME).
    fn control(&self, name: &str) -> PathBuf {
        self.dir.path().join("control").join(name)
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn control_fields(built: &Built) {
    let field = |name: &str| {
        run_ok("dpkg-deb", &["-f", built.deb(), name])
            .trim()
            .to_owned()
    };
    let arch = run_ok("dpkg", &["--print-architecture"]);
    assert_eq!(field("Package"), "chom");
    assert_eq!(field("Version"), deb_version());
    assert_eq!(field("Architecture"), arch.trim());
    let depends = field("Depends");
    for needed in ["libc6 (>= ", "adduser", "ca-certificates"] {
        assert!(
            depends.contains(needed),
            "Depends: {depends} lacks {needed}"
        );
    }
    assert_eq!(field("Suggests"), "postgresql, redis-server");
    let size: u64 = field("Installed-Size")
        .parse()
        .expect("Installed-Size is KiB");
    let binary_kib = std::fs::metadata(CHOM).unwrap().len() / 1024;
    assert!(
        size >= binary_kib,
        "Installed-Size {size} KiB < the binary's {binary_kib} KiB"
    );
}

/// Every entry of the package's data archive: path ("/etc/chom") -> "mode owner/group".
fn listing(built: &Built) -> BTreeMap<String, String> {
    run_ok("dpkg-deb", &["-c", built.deb()])
        .lines()
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(fields.len(), 6, "unexpected dpkg-deb -c line {line:?}");
            let path = fields[5].trim_start_matches('.').trim_end_matches('/');
            let path = if path.is_empty() { "/" } else { path };
            (path.to_owned(), format!("{} {}", fields[0], fields[1]))
        })
        .collect()
}

/// Files under deploy/observability, relative to it, sorted.
fn observability_files(dir: &Path, prefix: &str, found: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = format!("{prefix}/{}", entry.file_name().to_str().unwrap());
        if entry.file_type().unwrap().is_dir() {
            observability_files(&entry.path(), &name, found);
        } else {
            found.push(name);
        }
    }
}

/// The exact file list: each file with its mode, every directory above it 0755 except
/// /etc/chom (0750), everything root-owned.
fn expected_listing() -> BTreeMap<String, String> {
    let mut files: Vec<(String, &str)> = vec![
        ("/usr/bin/chom".into(), "-rwxr-xr-x"),
        ("/lib/systemd/system/chom.service".into(), "-rw-r--r--"),
        ("/etc/chom/chom.toml".into(), "-rw-r-----"),
        ("/usr/share/doc/chom/copyright".into(), "-rw-r--r--"),
        ("/usr/share/doc/chom/changelog.gz".into(), "-rw-r--r--"),
        ("/usr/share/doc/chom/systemd.md".into(), "-rw-r--r--"),
    ];
    let mut obs = Vec::new();
    observability_files(
        &repo("deploy/observability"),
        "/usr/share/chom/observability",
        &mut obs,
    );
    files.extend(obs.into_iter().map(|path| (path, "-rw-r--r--")));

    let mut expected = BTreeMap::new();
    for (path, mode) in files {
        for dir in Path::new(&path).ancestors().skip(1) {
            let dir = dir.to_str().unwrap().to_owned();
            let mode = if dir == "/etc/chom" {
                "drwxr-x---"
            } else {
                "drwxr-xr-x"
            };
            expected.insert(dir, format!("{mode} root/root"));
        }
        expected.insert(path, format!("{mode} root/root"));
    }
    expected
}

/// Whether two files have the same bytes, read in chunks (the debug binary is large).
fn same_bytes(a: &Path, b: &Path) -> bool {
    let open = |p: &Path| std::fs::File::open(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let (mut fa, mut fb) = (open(a), open(b));
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

fn file_list(built: &Built) {
    let found = listing(built);
    let expected = expected_listing();
    let differ = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| -> Vec<String> {
        a.iter()
            .filter(|(path, mode)| b.get(*path) != Some(*mode))
            .map(|(path, mode)| format!("{mode} {path}"))
            .collect()
    };
    let (missing, unexpected) = (differ(&expected, &found), differ(&found, &expected));
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "package file list differs\n  expected, not found:\n    {}\n  found, not expected:\n    {}",
        missing.join("\n    "),
        unexpected.join("\n    ")
    );
}

/// The conffile, and maintainer scripts that parse and start/stop the unit through
/// deb-systemd-invoke, which asks policy-rc.d (exit 101 there keeps the node from starting).
fn control_files(built: &Built) {
    assert_eq!(
        String::from_utf8(read(&built.control("conffiles"))).unwrap(),
        "/etc/chom/chom.toml\n"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = built.control(script);
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&path).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o755, "DEBIAN/{script} mode {mode:o}");
        run_ok("sh", &["-n", path.to_str().unwrap()]);
        let text = String::from_utf8(read(&path)).unwrap();
        let direct = text.lines().map(str::trim_start).find(|l| {
            ["systemctl start", "systemctl restart", "systemctl stop"]
                .iter()
                .any(|bare| l.starts_with(bare))
        });
        assert_eq!(direct, None, "DEBIAN/{script} bypasses deb-systemd-invoke");
    }
    let postinst = String::from_utf8(read(&built.control("postinst"))).unwrap();
    for needed in [
        "deb-systemd-invoke restart",
        "deb-systemd-invoke start",
        "adduser --system",
    ] {
        assert!(
            postinst.contains(needed),
            "DEBIAN/postinst lacks {needed:?}"
        );
    }
    let prerm = String::from_utf8(read(&built.control("prerm"))).unwrap();
    assert!(
        prerm.contains("deb-systemd-invoke stop"),
        "DEBIAN/prerm does not stop the unit"
    );
}

/// The shipped files are the repository's, byte for byte, and the unit's paths exist in it.
fn shipped_files(built: &Built) {
    assert!(
        same_bytes(&built.file("/usr/bin/chom"), Path::new(CHOM)),
        "/usr/bin/chom is not the binary given"
    );
    assert_eq!(read(&built.file("/lib/systemd/system/chom.service")), UNIT);
    assert_eq!(read(&built.file("/etc/chom/chom.toml")), CONFIG);
    assert_eq!(
        read(&built.file("/usr/share/doc/chom/systemd.md")),
        SYSTEMD_README
    );
    let unit = String::from_utf8(UNIT.to_vec()).unwrap();
    assert!(unit.contains("\nExecStart=/usr/bin/chom node --config /etc/chom/chom.toml\n"));
    assert!(unit.contains("\nDocumentation=file:///usr/share/doc/chom/systemd.md\n"));

    let changelog = run_ok(
        "gzip",
        &[
            "-dc",
            built
                .file("/usr/share/doc/chom/changelog.gz")
                .to_str()
                .unwrap(),
        ],
    );
    let head = format!("chom ({}) ", deb_version());
    assert!(
        changelog.starts_with(&head),
        "changelog starts {:?}",
        changelog.lines().next()
    );

    let mut obs = Vec::new();
    observability_files(&repo("deploy/observability"), "", &mut obs);
    assert!(
        obs.iter().any(|f| f.ends_with("prometheus.yml")),
        "nothing found under deploy/observability"
    );
    for file in obs {
        let shipped = built.file(&format!("/usr/share/chom/observability{file}"));
        assert_eq!(
            read(&shipped),
            read(&repo(&format!("deploy/observability{file}"))),
            "{file}"
        );
    }
}

/// `chom config check` (the packaged binary) accepts /etc/chom/chom.toml as shipped, with no
/// CHOM_* variable of this environment helping, and it resolves to the unit's paths.
fn shipped_config_checks(built: &Built) {
    let mut check = Command::new(built.file("/usr/bin/chom"));
    check.args([
        "--config",
        built.file("/etc/chom/chom.toml").to_str().unwrap(),
        "config",
        "check",
        "--json",
    ]);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("CHOM_")) {
        check.env_remove(name);
    }
    let out = check.output().unwrap();
    assert!(
        out.status.success(),
        "config check of the shipped chom.toml ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    let config = &report["config"];
    assert_eq!(
        config["node"]["data_dir"], "/var/lib/chom",
        "StateDirectory=chom"
    );
    assert_eq!(config["database"]["url"], "sqlite:///var/lib/chom/chom.db");
    assert_eq!(config["cache"]["url"], "memory://");
    assert_eq!(
        config["admin"]["socket"], "/run/chom/chom.sock",
        "RuntimeDirectory=chom"
    );
    // On a fresh host only the fleet's SSH files, which the deployment adds, are missing.
    let warnings = report["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .all(|w| w["key"].as_str().unwrap_or("").starts_with("ssh.")),
        "unexpected warnings: {warnings:?}"
    );
}

#[test]
fn package_holds_what_the_deploy_installs() {
    let built = Built::new();
    control_fields(&built);
    file_list(&built);
    control_files(&built);
    shipped_files(&built);
    shipped_config_checks(&built);
}

#[test]
fn build_deb_refuses_a_binary_of_another_version_and_unknown_arguments() {
    let dir = TempDir::new("deb-refuse");
    let out = dir.path().to_str().unwrap();
    let script = repo("scripts/build-deb");
    let script = script.to_str().unwrap();
    // /bin/true prints no version: it could be any build, so it is not packaged.
    let refused = run(script, &["--debug", "--binary", "/bin/true", "--out", out]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("the workspace is at"), "{stderr}");
    let usage = run(script, &["--profile", "fast"]);
    assert_eq!(usage.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&usage.stderr).contains("unknown argument: --profile"));
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing is written on refusal"
    );
}
