//! Test guest `grow-memory`: allocates 1 MiB blocks and keeps them until the
//! allocator fails, so linear memory really grows (`memory.grow`) until the
//! host's memory limit refuses; the failed allocation then traps.
//!
//! Input (optional): `{"mib": N}` stops after N MiB and returns
//! `{"allocated_mib": N}`, to check that use under the limit is fine.

use ionflux_pdk::json::{self, Value};
use ionflux_pdk::Error;
use std::ptr::{addr_of_mut, write_volatile};

const BLOCK: usize = 1 << 20;

/// Where each block's address is written, so the optimiser cannot prove the
/// allocations unused and delete them.
static mut SINK: usize = 0;

fn run(input: &str) -> Result<String, Error> {
    let limit = json::parse(input)
        .ok()
        .and_then(|v| v.opt_u64("mib").ok().flatten())
        .unwrap_or(u64::MAX);
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    while (blocks.len() as u64) < limit {
        // Touch every page so the memory is really in use, not just reserved.
        let block = vec![0xA5u8; BLOCK];
        // SAFETY: single-threaded guest.
        unsafe { write_volatile(addr_of_mut!(SINK), block.as_ptr() as usize) };
        blocks.push(block);
    }
    Ok(Value::object([("allocated_mib", Value::from(blocks.len()))]).to_json())
}

ionflux_pdk::export!(run);
