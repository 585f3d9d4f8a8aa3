//! The guest's global allocator: std's (dlmalloc on wasm32), except that
//! running out of memory traps right here, in a function whose name says so.
//!
//! Without this, an allocation failure goes through `handle_alloc_error` and
//! `abort`, which fat LTO inlines into whatever allocated, so the host sees a
//! bare `unreachable` trap it cannot tell from a bug. With it, the backtrace
//! the host gets names `ionflux_pdk::alloc::out_of_memory` (modules keep
//! their `name` section for that reason; see the profile in /Cargo.toml),
//! and the host reports "memory limit exceeded" instead of "trapped".
//!
//! The price: a failed allocation can no longer be recovered from
//! (`Vec::try_reserve` traps instead of returning an error). Guests under a
//! host memory limit have nothing better to do anyway.

use std::alloc::{GlobalAlloc, Layout, System};

pub struct GuestAllocator;

// SAFETY: forwards every call to System, only replacing a null result (which
// callers would turn into a trap anyway) with a trap.
unsafe impl GlobalAlloc for GuestAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        non_null(unsafe { System.alloc(layout) })
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        non_null(unsafe { System.alloc_zeroed(layout) })
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        non_null(unsafe { System.realloc(ptr, layout, new_size) })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[inline(always)]
fn non_null(ptr: *mut u8) -> *mut u8 {
    if ptr.is_null() {
        out_of_memory()
    }
    ptr
}

/// Traps. Kept out of line so that it is a frame of its own, by name, in the
/// host's backtrace.
#[cold]
#[inline(never)]
fn out_of_memory() -> ! {
    std::process::abort()
}

#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: GuestAllocator = GuestAllocator;
