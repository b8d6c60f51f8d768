//! Load generator for kadr: a stub. The measurement that exists today is `scripts/demo.sh --fast`
//! (see BENCHMARKS.md); the full generator (S streams at R fps, latency percentiles, CPU) is
//! planned with the speed work.

fn main() {
    eprintln!("kadr-loadtest is not written yet; run `scripts/demo.sh --fast` (see BENCHMARKS.md)");
    std::process::exit(2);
}
