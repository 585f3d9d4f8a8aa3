//! The canonical ABI of `wit/transform.wit` on wasm32, by hand.
//!
//! Layouts used below (canonical ABI, 32-bit memory; offsets in bytes):
//!
//! * `string`, `list<T>`: (ptr: u32, len: u32); a list's len counts elements.
//! * `error` variant (6 cases): disc u8 @0, payload string @4..12; size 12, align 4.
//! * `result<_, error>`:            disc u8 @0, err @4;                     size 16.
//! * `result<string, error>`:       disc u8 @0, ok string @4, err @4;      size 16.
//! * `result<option<string>, error>`: disc @0, ok option: disc @4, string @8; size 16.
//! * `header`: name @0, value @8; size 16, align 4.
//! * `response`: status u16 @0, headers @4, body @12; size 20, align 4.
//! * `result<response, error>`: disc @0, response @4 (status @4, headers @8,
//!   body @16); size 24.
//!
//! Every import result flattens to more than one core value, so the guest
//! passes a pointer to a return area as the last core parameter and the host
//! writes the result there, allocating every string/list it returns through
//! our `cabi_realloc`; the guest then owns those allocations. The one export
//! does the mirror image: it returns a pointer to a static return area and
//! frees what it points to in `cabi_post_run`. No function here has more
//! than 16 flat parameters (`http.fetch` has 11 + the return pointer), so no
//! argument goes through memory.

use crate::Error;
use std::alloc::{self, Layout};

/// Return area big enough and aligned for every import result of the world.
#[repr(C, align(4))]
pub(crate) struct RetArea([u8; 24]);

impl RetArea {
    pub(crate) fn new() -> RetArea {
        RetArea([0; 24])
    }

    pub(crate) fn ptr(&mut self) -> *mut u8 {
        self.0.as_mut_ptr()
    }

    pub(crate) fn u8(&self, offset: usize) -> u8 {
        self.0[offset]
    }

    pub(crate) fn u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.0[offset], self.0[offset + 1]])
    }

    pub(crate) fn u32(&self, offset: usize) -> u32 {
        let b = &self.0[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Takes ownership of the string whose (ptr, len) is stored at `offset`.
    ///
    /// # Safety
    /// The host must have written a string it allocated via `cabi_realloc`.
    pub(crate) unsafe fn take_string(&self, offset: usize) -> String {
        // SAFETY: forwarded from the caller.
        unsafe { take_string(self.u32(offset) as usize, self.u32(offset + 4) as usize) }
    }

    /// Lifts `result<T, error>`'s error payload when the discriminant says
    /// `err`; returns `None` for `ok` so the caller lifts its own payload.
    ///
    /// # Safety
    /// The host must have written a `result<_, error>` into this area.
    pub(crate) unsafe fn take_error(&self) -> Option<Error> {
        match self.u8(0) {
            0 => None,
            // SAFETY: an `err` payload is an `error` at offset 4, its string at 8.
            1 => Some(Error::from_discriminant(self.u8(4), unsafe { self.take_string(8) })),
            other => Some(Error::Failed(format!("host returned result discriminant {other}"))),
        }
    }
}

/// Takes ownership of a host-allocated UTF-8 buffer.
///
/// # Safety
/// `ptr` must come from `cabi_realloc(_, _, 1, len)` and not be used again.
pub(crate) unsafe fn take_string(ptr: usize, len: usize) -> String {
    if len == 0 {
        // Nothing was allocated (our realloc hands out a dangling pointer for
        // size 0), and the host may even pass 0 here.
        return String::new();
    }
    // SAFETY: allocated by the global allocator with Layout(len, 1), which is
    // exactly what Vec<u8> with capacity len deallocates with.
    let bytes = unsafe { Vec::from_raw_parts(ptr as *mut u8, len, len) };
    // The host only lowers valid UTF-8 into a `string`; checking anyway costs
    // little and keeps this function sound even if it did not.
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Frees a host-allocated array (a `list<record>`) once its elements are read.
///
/// # Safety
/// `ptr` must come from `cabi_realloc(_, _, align, elem_size * count)`.
pub(crate) unsafe fn free_array(ptr: usize, elem_size: usize, align: usize, count: usize) {
    if count == 0 || elem_size == 0 {
        return;
    }
    // SAFETY: same layout as the host's allocation.
    unsafe {
        alloc::dealloc(
            ptr as *mut u8,
            Layout::from_size_align_unchecked(elem_size * count, align),
        )
    }
}

/// Reads a little-endian u32 from guest memory the host wrote.
///
/// # Safety
/// `ptr..ptr+4` must be readable.
pub(crate) unsafe fn read_u32(ptr: usize) -> u32 {
    // SAFETY: forwarded from the caller; unaligned read so no alignment is assumed.
    u32::from_le(unsafe { std::ptr::read_unaligned(ptr as *const u32) })
}

/// Import calls only exist inside a wasm host. Natively (for example
/// `cargo test` of the JSON code) every import answers `unavailable` instead
/// of failing to link.
pub(crate) fn require_host(import: &str) -> Result<(), Error> {
    if cfg!(target_arch = "wasm32") {
        Ok(())
    } else {
        Err(Error::Unavailable(format!("{import}: not running inside a wasm host")))
    }
}

/// `cabi_realloc`: the host's allocator in guest memory.
///
/// # Safety
/// Canonical ABI contract: `(old_ptr, old_size, align)` describe a block this
/// function returned earlier, or `old_size == 0` for a new allocation.
pub unsafe fn realloc(old_ptr: *mut u8, old_size: usize, align: usize, new_size: usize) -> *mut u8 {
    let layout = match Layout::from_size_align(new_size, align) {
        Ok(layout) => layout,
        // A non-power-of-two alignment is a host bug; trap rather than guess.
        Err(_) => std::process::abort(),
    };
    if new_size == 0 {
        if old_size != 0 {
            // SAFETY: contract above.
            unsafe { alloc::dealloc(old_ptr, Layout::from_size_align_unchecked(old_size, align)) };
        }
        // Zero-size allocations must not reach the global allocator; any
        // non-null aligned pointer is a valid empty block.
        return align as *mut u8;
    }
    let ptr = if old_size == 0 {
        // SAFETY: layout has a non-zero size.
        unsafe { alloc::alloc(layout) }
    } else {
        // SAFETY: contract above; new_size is non-zero.
        unsafe { alloc::realloc(old_ptr, Layout::from_size_align_unchecked(old_size, align), new_size) }
    };
    if ptr.is_null() {
        // Out of guest memory (usually the store's memory limit): a trap is
        // the only answer the ABI allows here.
        alloc::handle_alloc_error(layout);
    }
    ptr
}

/// The export's return area. Only one `run` is ever in flight per instance
/// (the component model forbids re-entering an instance), so one static is
/// enough, and it lives until `cabi_post_run`.
static mut RUN_RET_AREA: [u32; 4] = [0; 4];
/// Capacity of the output buffer handed to the host, needed to free it.
static mut RUN_OUT_CAP: usize = 0;

/// The `run` export: lift the input, call the transform, lower its result.
///
/// # Safety
/// Called by the host only, per the canonical ABI.
pub unsafe fn run(ptr: *mut u8, len: usize, f: fn(&str) -> Result<String, Error>) -> *mut u8 {
    // SAFETY: the host allocated the input with cabi_realloc(0, 0, 1, len).
    let input = unsafe { take_string(ptr as usize, len) };
    let result = f(&input);
    // Free the input before the output is handed over, so a transform whose
    // output is as large as its input does not need both alive at the end.
    drop(input);

    let (disc, case, bytes) = match result {
        Ok(text) => (0u32, 0u32, text.into_bytes()),
        Err(err) => (1, u32::from(err.discriminant()), err.into_message().into_bytes()),
    };
    // Ownership passes to the host until cabi_post_run; keeping the capacity
    // avoids a shrink-to-fit copy of a possibly large output.
    let bytes = std::mem::ManuallyDrop::new(bytes);
    let (out_ptr, out_len) = (bytes.as_ptr() as usize as u32, bytes.len() as u32);
    // SAFETY: single-threaded, non-reentrant (see RUN_RET_AREA).
    unsafe {
        RUN_OUT_CAP = bytes.capacity();
        let area = &mut *std::ptr::addr_of_mut!(RUN_RET_AREA);
        // Each u32 slot is little-endian in memory, so slot 0's low byte is the
        // u8 discriminant at offset 0 and its padding bytes are zero.
        if disc == 0 {
            *area = [0, out_ptr, out_len, 0];
        } else {
            *area = [1, case, out_ptr, out_len];
        }
        std::ptr::addr_of_mut!(RUN_RET_AREA) as *mut u8
    }
}

/// `cabi_post_run`: frees the output `run` returned.
///
/// # Safety
/// `area` must be the pointer `run` returned, once.
pub unsafe fn post_run(area: *mut u8) {
    let area = area as usize;
    // SAFETY: area points at RUN_RET_AREA, written by `run`.
    unsafe {
        let (ptr, len) = if *(area as *const u8) == 0 {
            (read_u32(area + 4), read_u32(area + 8))
        } else {
            (read_u32(area + 8), read_u32(area + 12))
        };
        let cap = RUN_OUT_CAP;
        RUN_OUT_CAP = 0;
        drop(Vec::from_raw_parts(ptr as usize as *mut u8, len as usize, cap));
    }
}

/// Raw core imports of the world. Pointers and lengths are i32 on wasm32.
#[cfg(target_arch = "wasm32")]
pub(crate) mod raw {
    #[link(wasm_import_module = "ionflux:transform/log@0.1.0")]
    extern "C" {
        #[link_name = "write"]
        pub fn log_write(level: i32, msg: *const u8, msg_len: usize, ret: *mut u8);
    }

    #[link(wasm_import_module = "ionflux:transform/config@0.1.0")]
    extern "C" {
        #[link_name = "get"]
        pub fn config_get(key: *const u8, key_len: usize, ret: *mut u8);
    }

    #[link(wasm_import_module = "ionflux:transform/pod@0.1.0")]
    extern "C" {
        #[link_name = "get"]
        pub fn pod_get(reference: *const u8, reference_len: usize, ret: *mut u8);
        #[link_name = "put"]
        pub fn pod_put(
            path: *const u8,
            path_len: usize,
            data: *const u8,
            data_len: usize,
            ret: *mut u8,
        );
    }

    #[link(wasm_import_module = "ionflux:transform/bus@0.1.0")]
    extern "C" {
        #[link_name = "publish"]
        pub fn bus_publish(
            subject: *const u8,
            subject_len: usize,
            payload: *const u8,
            payload_len: usize,
            ret: *mut u8,
        );
    }

    #[link(wasm_import_module = "ionflux:transform/http@0.1.0")]
    extern "C" {
        /// `request` flattened field by field: method, url, headers (a list of
        /// 16-byte `header` records), body (option: disc, ptr, len), timeout-ms
        /// (option: disc, value).
        #[link_name = "fetch"]
        pub fn http_fetch(
            method: *const u8,
            method_len: usize,
            url: *const u8,
            url_len: usize,
            headers: *const u8,
            headers_len: usize,
            body_is_some: i32,
            body: *const u8,
            body_len: usize,
            timeout_is_some: i32,
            timeout_ms: i32,
            ret: *mut u8,
        );
    }
}

/// Off wasm32 the imports do not exist; `require_host` keeps these unreachable.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::too_many_arguments)]
pub(crate) mod raw {
    pub unsafe fn log_write(_: i32, _: *const u8, _: usize, _: *mut u8) {
        unreachable!()
    }
    pub unsafe fn config_get(_: *const u8, _: usize, _: *mut u8) {
        unreachable!()
    }
    pub unsafe fn pod_get(_: *const u8, _: usize, _: *mut u8) {
        unreachable!()
    }
    pub unsafe fn pod_put(_: *const u8, _: usize, _: *const u8, _: usize, _: *mut u8) {
        unreachable!()
    }
    pub unsafe fn bus_publish(_: *const u8, _: usize, _: *const u8, _: usize, _: *mut u8) {
        unreachable!()
    }
    pub unsafe fn http_fetch(
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: *const u8,
        _: usize,
        _: i32,
        _: *const u8,
        _: usize,
        _: i32,
        _: i32,
        _: *mut u8,
    ) {
        unreachable!()
    }
}
