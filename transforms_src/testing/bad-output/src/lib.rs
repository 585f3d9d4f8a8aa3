//! Test guest `bad-output`: returns output the host must refuse.
//!
//! Input (optional): `{"mode": ...}`:
//! * `not-json` (default): `ok` with text that is not JSON;
//! * `invalid-utf8`: `ok` whose string bytes are not UTF-8, which the
//!   canonical ABI forbids (the host's lift must fail, not crash);
//! * `out-of-bounds`: `ok` whose string pointer lies outside linear memory;
//! * `bad-discriminant`: a `result` discriminant of 7.
//!
//! The last three cannot be produced through the SDK's safe API, so this
//! crate writes its own `run` export: it runs the SDK's normal glue and then
//! corrupts the return area it produced.

use ionflux_pdk::json;
use ionflux_pdk::Error;
use std::ptr::{addr_of, addr_of_mut};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    NotJson,
    InvalidUtf8,
    OutOfBounds,
    BadDiscriminant,
}

static mut MODE: Mode = Mode::NotJson;
/// Two bytes that can never start valid UTF-8.
static INVALID_UTF8: [u8; 2] = [0xFF, 0xFE];

fn produce(input: &str) -> Result<String, Error> {
    let mode = match json::parse(input).ok().as_ref().and_then(|v| v.get("mode")).and_then(|m| m.as_str()) {
        None | Some("not-json") => Mode::NotJson,
        Some("invalid-utf8") => Mode::InvalidUtf8,
        Some("out-of-bounds") => Mode::OutOfBounds,
        Some("bad-discriminant") => Mode::BadDiscriminant,
        Some(other) => {
            return Err(Error::Invalid(format!(
                "field `mode` must be not-json, invalid-utf8, out-of-bounds or bad-discriminant, got {other:?}"
            )))
        }
    };
    // SAFETY: single-threaded guest.
    unsafe { MODE = mode };
    Ok("this is not JSON {".to_string())
}

#[export_name = "run"]
pub extern "C" fn bad_run(ptr: *mut u8, len: usize) -> *mut u8 {
    // SAFETY: called by the host per the canonical ABI, like the SDK's export.
    unsafe {
        MODE = Mode::NotJson;
        let area = ionflux_pdk::__private::run(ptr, len, produce);
        let words = area as *mut u32;
        match *addr_of!(MODE) {
            Mode::NotJson => {}
            Mode::InvalidUtf8 => {
                *words.add(1) = addr_of!(INVALID_UTF8) as usize as u32;
                *words.add(2) = INVALID_UTF8.len() as u32;
            }
            Mode::OutOfBounds => {
                *words.add(1) = 0xFFFF_0000;
                *words.add(2) = 0x100;
            }
            Mode::BadDiscriminant => *(area as *mut u8) = 7,
        }
        area
    }
}

#[export_name = "cabi_post_run"]
pub extern "C" fn bad_post_run(area: *mut u8) {
    // The corrupted modes leak the SDK's output buffer instead of freeing a
    // pointer that is not theirs; the instance is thrown away anyway.
    // SAFETY: as in `bad_run`.
    unsafe {
        if *addr_of_mut!(MODE) == Mode::NotJson {
            ionflux_pdk::__private::post_run(area)
        }
    }
}

#[export_name = "cabi_realloc"]
pub extern "C" fn bad_cabi_realloc(old: *mut u8, old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    // SAFETY: the host follows the realloc contract.
    unsafe { ionflux_pdk::__private::realloc(old, old_size, align, new_size) }
}
