//! A private Redis server for tests that stop, start or freeze the cache: the shared server on
//! 6379 is never touched. Keeps nothing on disk; killed on drop.

use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use rustix::process::Signal;

use crate::daemon::freeze_pid;
use crate::{free_port, signal, wait_until};

/// A `redis-server` on a free loopback port.
pub struct PrivateRedis {
    /// Its port.
    pub port: u16,
    child: Mutex<Option<Child>>,
}

impl PrivateRedis {
    /// Start one; returns once it accepts connections.
    pub fn start() -> PrivateRedis {
        let redis = PrivateRedis {
            port: free_port(),
            child: Mutex::new(None),
        };
        redis.start_again();
        redis
    }

    /// `redis://127.0.0.1:PORT`.
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
        wait_until(Duration::from_secs(30), "private Redis to accept", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    /// SIGKILL it; returns once the port refuses connections.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let port = self.port;
        wait_until(Duration::from_secs(10), "private Redis to be gone", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err()
        });
    }

    /// SIGSTOP: connections are accepted but never answered. Returns once it is stopped.
    pub fn freeze(&self) {
        if let Some(child) = self.child.lock().unwrap().as_ref() {
            freeze_pid(child.id());
        }
    }

    /// SIGCONT what [`PrivateRedis::freeze`] stopped.
    pub fn thaw(&self) {
        if let Some(child) = self.child.lock().unwrap().as_ref() {
            signal(child.id(), Signal::CONT);
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(mut child) = child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
