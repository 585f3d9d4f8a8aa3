//! Test guest `busy`: a call that is all guest work and then returns. Input
//! `{"iterations": N}`; each iteration does a volatile read-modify-write of a
//! static (the optimiser must keep it); the answer is `{"iterations": N}`.
//! The heavy node of the engine's fan-out benchmark.

use ionflux_pdk::Error;
use std::ptr::{addr_of_mut, read_volatile, write_volatile};

static mut COUNTER: u64 = 0;

fn iterations(input: &str) -> Option<u64> {
    // The input is tiny and fixed in shape: no JSON parser in the guest.
    let key = "\"iterations\":";
    let at = input.find(key)? + key.len();
    let digits: String = input[at..]
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

fn run(input: &str) -> Result<String, Error> {
    let n = iterations(input)
        .ok_or_else(|| Error::Invalid("expected {\"iterations\": N}".into()))?;
    for _ in 0..n {
        // SAFETY: single-threaded guest; the static is only touched here.
        unsafe {
            let counter = addr_of_mut!(COUNTER);
            write_volatile(counter, read_volatile(counter).wrapping_add(1));
        }
    }
    Ok(format!("{{\"iterations\":{n}}}"))
}

ionflux_pdk::export!(run);
