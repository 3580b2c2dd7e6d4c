//! A stand-in for Loki's push endpoint (Loki is not packaged for Debian): it decodes what a
//! real Loki would (`POST /loki/api/v1/push`, gzip, JSON streams), keeps each stream's labels
//! and lines, and answers 204. Threads, not a runtime, so sync and async tests share it.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One pushed stream: its labels and its lines.
pub type Stream = (serde_json::Value, Vec<String>);

/// The receiver; stopped (port closed) when dropped or by [`LokiReceiver::stop`].
pub struct LokiReceiver {
    addr: SocketAddr,
    pushed: Arc<Mutex<Vec<Stream>>>,
    stopped: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl LokiReceiver {
    /// Listen on a free loopback port.
    pub fn start() -> LokiReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
        let addr = listener.local_addr().expect("local address");
        let pushed: Arc<Mutex<Vec<Stream>>> = Arc::default();
        let stopped = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (sink, stop, conns) = (pushed.clone(), stopped.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return; // the listener closes with this thread
                }
                if let Ok(conn) = conn {
                    if let Ok(clone) = conn.try_clone() {
                        conns.lock().unwrap_or_else(|e| e.into_inner()).push(clone);
                    }
                    let sink = sink.clone();
                    std::thread::spawn(move || serve(conn, &sink));
                }
            }
        });
        LokiReceiver {
            addr,
            pushed,
            stopped,
            open,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every stream pushed so far.
    pub fn streams(&self) -> Vec<Stream> {
        self.pushed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Close the port and every open connection: later pushes are refused, as by a Loki that
    /// went away (a kept-alive connection would otherwise go on being answered).
    pub fn stop(&self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            // Wake the accept loop so it sees the flag and drops the listener.
            let _ = TcpStream::connect(self.addr);
        }
        for conn in self
            .open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            let _ = conn.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for LokiReceiver {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Answer the pushes of one connection until it closes. A push that is not what Loki accepts
/// (path, compression, JSON shape, timestamps) panics this thread, so the sender sees its
/// connection cut and the test sees nothing stored.
fn serve(conn: TcpStream, sink: &Mutex<Vec<Stream>>) {
    let mut conn = BufReader::new(conn);
    loop {
        let (mut length, mut gzip) = (0usize, false);
        let mut line = String::new();
        if conn.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
        loop {
            line.clear();
            if conn.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(v) = header.strip_prefix("content-length:") {
                length = v.trim().parse().expect("a content-length");
            }
            gzip |= header == "content-encoding: gzip";
        }
        let mut body = vec![0; length];
        conn.read_exact(&mut body).expect("the body");
        assert_eq!(path, "/loki/api/v1/push");
        assert!(gzip, "pushes are compressed");
        let mut text = String::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_string(&mut text)
            .expect("gzip");
        let push: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        for stream in push["streams"].as_array().expect("streams") {
            let lines = stream["values"]
                .as_array()
                .expect("values")
                .iter()
                .map(|v| {
                    let nanos = v[0].as_str().expect("a timestamp string");
                    assert!(nanos.parse::<u128>().is_ok(), "{v}");
                    v[1].as_str().expect("a line").to_owned()
                })
                .collect();
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((stream["stream"].clone(), lines));
        }
        let answer = b"HTTP/1.1 204 No Content\r\ncontent-length: 0\r\n\r\n";
        if conn.get_mut().write_all(answer).is_err() {
            return;
        }
    }
}
