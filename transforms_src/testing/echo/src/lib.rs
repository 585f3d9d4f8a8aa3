//! Test guest `echo`: returns its input unchanged, JSON or not. The trivial
//! transform of the benchmarks: its cost is the host's per-call overhead plus
//! two copies of the input.

use ionflux_pdk::Error;

fn run(input: &str) -> Result<String, Error> {
    Ok(input.to_string())
}

ionflux_pdk::export!(run);
