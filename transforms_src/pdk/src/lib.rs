//! Guest SDK for IONFLUX transforms.
//!
//! A transform is a WebAssembly component of the world `ionflux:transform/transform`
//! (`wit/transform.wit`): it exports `run(input: string) -> result<string, error>`
//! and may call the host through the imported interfaces `log`, `config`, `pod`,
//! `bus` and `http`. wit-bindgen does not build with the only rustc that has a
//! wasm32 std here (Debian's 1.63), so this crate is the canonical-ABI glue for
//! that one world, written by hand, with a safe API on top:
//!
//! ```ignore
//! use ionflux_pdk::{json, Error};
//!
//! fn run(input: &str) -> Result<String, Error> {
//!     let input = json::parse_input(input)?;
//!     let text = input.require_str("text")?;
//!     ionflux_pdk::log::write(ionflux_pdk::log::Level::Info, "upper-casing")?;
//!     Ok(json::Value::object([("text", json::Value::from(text.to_uppercase()))]).to_string())
//! }
//!
//! ionflux_pdk::export!(run);
//! ```
//!
//! Every import answers `Result<_, Error>`; the host never traps a guest for a
//! refused capability, it answers `Error::Denied`, and a transform passes that
//! back out of `run` (usually with `Error::context`) so the caller sees why.

#![deny(unsafe_op_in_unsafe_fn)]

mod abi;
mod alloc;
mod error;
pub mod json;

pub mod bus;
pub mod config;
pub mod http;
pub mod log;
pub mod pod;

pub use error::Error;

/// Registers `fn(&str) -> Result<String, Error>` as the component's `run` export.
///
/// Expands to the three core exports the canonical ABI expects from a module of
/// this world: `run`, its post-return `cabi_post_run`, and `cabi_realloc`
/// (through which the host writes the input and every string or list an import
/// returns into guest memory). They are emitted in the transform crate itself
/// rather than in this library because `#[no_mangle]` items of a dependency
/// are not reliably kept in a `cdylib`'s export list.
#[macro_export]
macro_rules! export {
    ($run:path) => {
        const _: () = {
            #[export_name = "run"]
            pub extern "C" fn __ionflux_run(ptr: *mut u8, len: usize) -> *mut u8 {
                let run: fn(&str) -> ::core::result::Result<::std::string::String, $crate::Error> =
                    $run;
                // SAFETY: the host calls this export exactly as the canonical ABI
                // lowers `run(input: string)`: (ptr, len) of a UTF-8 buffer it
                // allocated through `cabi_realloc` with alignment 1.
                unsafe { $crate::__private::run(ptr, len, run) }
            }

            #[export_name = "cabi_post_run"]
            pub extern "C" fn __ionflux_post_run(area: *mut u8) {
                // SAFETY: called by the host once it has copied out the result
                // that `run` returned in `area`.
                unsafe { $crate::__private::post_run(area) }
            }

            #[export_name = "cabi_realloc"]
            pub extern "C" fn __ionflux_cabi_realloc(
                old_ptr: *mut u8,
                old_size: usize,
                align: usize,
                new_size: usize,
            ) -> *mut u8 {
                // SAFETY: the host follows the canonical ABI's realloc contract.
                unsafe { $crate::__private::realloc(old_ptr, old_size, align, new_size) }
            }
        };
    };
}

/// Not public API: what `export!` expands to.
#[doc(hidden)]
pub mod __private {
    pub use crate::abi::{post_run, realloc, run};
}
