//! Prints the restart benchmark as JSON: `cargo run --release -p chom-supervisors --example restart_bench [n]`.

#[tokio::main]
async fn main() {
    let n = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let result = chom_supervisors::bench::restart(n).await;
    println!(
        "{}",
        serde_json::to_string(&result).expect("bench result serializes")
    );
}
