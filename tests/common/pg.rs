//! A private PostgreSQL server for tests that stop and start the database: the shared server
//! on 5432 is never touched. Runs as the `postgres` OS user (PostgreSQL refuses root) on a free
//! loopback port, with its data directory in a temp dir.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::{free_port, rand_suffix, wait_for};

pub struct PrivatePg {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
}

fn pg_bin() -> PathBuf {
    let root = std::path::Path::new("/usr/lib/postgresql");
    let mut versions: Vec<_> = std::fs::read_dir(root)
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (run scripts/test)")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    versions.sort();
    versions.pop().expect("a PostgreSQL version").join("bin")
}

fn as_postgres(cmd: &mut Command) -> std::process::Output {
    cmd.output().expect("run a PostgreSQL tool")
}

impl PrivatePg {
    pub fn start() -> PrivatePg {
        let dir =
            std::env::temp_dir().join(format!("chom-pg-{}-{}", std::process::id(), rand_suffix()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = pg_bin();
        let root = rustix::process::geteuid().is_root();
        if root {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .unwrap();
            assert!(st.success());
        }
        let pg = PrivatePg {
            dir,
            port: free_port(),
            bin,
        };
        let data = pg.dir.join("data");
        let out = as_postgres(
            pg.cmd("initdb")
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(&data),
        );
        assert!(out.status.success(), "initdb: {out:?}");
        pg.start_again();
        pg
    }

    fn cmd(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if rustix::process::geteuid().is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    pub fn start_again(&self) {
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let out = as_postgres(
            self.cmd("pg_ctl")
                .args(["-w", "-t", "60", "-D"])
                .arg(self.dir.join("data"))
                .args(["-l"])
                .arg(self.dir.join("log"))
                .args(["-o", &opts, "start"]),
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {out:?}\n{}",
            std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
        );
        let port = self.port;
        wait_for(
            Duration::from_secs(30),
            "private PostgreSQL to accept connections",
            || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        );
    }

    pub fn stop(&self) {
        let out = as_postgres(
            self.cmd("pg_ctl")
                .args(["-w", "-m", "fast", "-D"])
                .arg(self.dir.join("data"))
                .arg("stop"),
        );
        assert!(out.status.success(), "pg_ctl stop: {out:?}");
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self
            .cmd("pg_ctl")
            .args(["-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .arg("stop")
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
