//! Test guest `deep-recursion`: recurses until the wasm call stack overflows
//! (wasmtime's `max_wasm_stack`), which traps.
//!
//! The recursive call goes through a function pointer read with a volatile
//! load, so LLVM can neither inline it nor turn it into a loop, and it is not
//! a tail call. The frames keep their state in wasm locals, so it is the
//! engine's native stack that overflows, not the shadow stack in linear
//! memory. Input (optional): `{"depth": N}` stops at depth N and returns
//! `{"depth": N, "sum": N*(N+1)/2}`.

use ionflux_pdk::json::{self, Value};
use ionflux_pdk::Error;
use std::ptr::{addr_of, read_volatile};

static mut RECURSE: fn(u64) -> u64 = recurse;

fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // SAFETY: the static always holds `recurse`.
    let next = unsafe { read_volatile(addr_of!(RECURSE)) };
    next(n - 1).wrapping_add(n)
}

fn run(input: &str) -> Result<String, Error> {
    let depth = json::parse(input)
        .ok()
        .and_then(|v| v.opt_u64("depth").ok().flatten())
        .unwrap_or(u64::MAX);
    let sum = recurse(depth);
    Ok(Value::object([("depth", Value::from(depth)), ("sum", Value::from(sum))]).to_json())
}

ionflux_pdk::export!(run);
