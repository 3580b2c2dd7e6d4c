//! A private Redis server for tests that stop and start the cache: the shared server on 6379
//! is never touched. Keeps nothing on disk.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use super::{free_port, wait_for};

pub struct PrivateRedis {
    pub port: u16,
    child: Mutex<Option<Child>>,
}

impl PrivateRedis {
    pub fn start() -> PrivateRedis {
        let port = free_port();
        let redis = PrivateRedis {
            port,
            child: Mutex::new(None),
        };
        redis.start_again();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start on the same port; returns once it accepts connections.
    pub fn start_again(&self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (run scripts/test, which installs it)");
        *self.child.lock().unwrap() = Some(child);
        let port = self.port;
        wait_for(Duration::from_secs(30), "private Redis to accept", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
    }

    /// SIGKILL it; returns once the port refuses connections.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        wait_for(Duration::from_secs(10), "private Redis to be gone", || {
            std::net::TcpStream::connect(("127.0.0.1", port))
                .is_err()
                .then_some(())
        });
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
