//! Test guest `spin`: never returns. Each iteration does a volatile
//! read-modify-write of a static, which the optimiser must keep, so only the
//! host's fuel or epoch deadline can stop it.

use ionflux_pdk::Error;
use std::ptr::{addr_of_mut, read_volatile, write_volatile};

static mut COUNTER: u64 = 0;

fn run(_input: &str) -> Result<String, Error> {
    loop {
        // SAFETY: single-threaded guest; the static is only touched here.
        unsafe {
            let counter = addr_of_mut!(COUNTER);
            write_volatile(counter, read_volatile(counter).wrapping_add(1));
        }
    }
}

ionflux_pdk::export!(run);
