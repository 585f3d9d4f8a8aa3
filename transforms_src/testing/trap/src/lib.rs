//! Test guest `trap`: traps on purpose.
//!
//! Input (optional): `{"mode": "unreachable" | "panic" | "out-of-bounds"}`:
//! * `unreachable` (default): executes `unreachable`;
//! * `panic`: a Rust panic, which with panic=abort is also `unreachable`,
//!   after formatting a message (exercises the panic path of a real bug);
//! * `out-of-bounds`: loads from an address past the end of linear memory.
//!
//! An unknown mode is returned as an `invalid` error, not a trap, so a test
//! can tell a typo from the trap it wanted.

use ionflux_pdk::json;
use ionflux_pdk::Error;

fn run(input: &str) -> Result<String, Error> {
    let parsed = json::parse(input).ok();
    let mode = parsed
        .as_ref()
        .and_then(|v| v.get("mode"))
        .and_then(|m| m.as_str())
        .unwrap_or("unreachable");
    match mode {
        "unreachable" => std::process::abort(),
        "panic" => panic!("deliberate panic from the trap test guest (input {} bytes)", input.len()),
        "out-of-bounds" => {
            // 4 GiB - 16: beyond any memory a 32-bit guest can have mapped
            // short of the full 4 GiB, which no test host allows.
            let address = 0xFFFF_FFF0usize as *const u64;
            // SAFETY: none; trapping is the point. The volatile read cannot
            // be optimised out.
            let v = unsafe { std::ptr::read_volatile(address) };
            Ok(v.to_string())
        }
        other => Err(Error::Invalid(format!(
            "field `mode` must be unreachable, panic or out-of-bounds, got {other:?}"
        ))),
    }
}

ionflux_pdk::export!(run);
