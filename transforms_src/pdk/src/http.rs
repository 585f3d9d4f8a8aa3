//! `ionflux:transform/http`: outbound HTTP. Scope: `http_fetch:<host>`
//! (with `:<port>` for a non-default port). The host does not follow redirects.

use crate::abi::{self, raw, RetArea};
use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<Header>,
    pub body: Option<String>,
    pub timeout_ms: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<Header>,
    pub body: String,
}

/// The canonical-ABI image of a `header` record: two (ptr, len) strings.
#[repr(C)]
struct RawHeader {
    name: *const u8,
    name_len: usize,
    value: *const u8,
    value_len: usize,
}

/// Size and alignment of `header` in guest memory (see `abi`).
const HEADER_SIZE: usize = 16;
const HEADER_ALIGN: usize = 4;
#[cfg(target_arch = "wasm32")]
const _: () = assert!(std::mem::size_of::<RawHeader>() == HEADER_SIZE);

/// Sends one request. A non-2xx status is a response, not an error; errors
/// are the host's: `denied`, `invalid` (bad URL), `unavailable` (connection
/// failed, timeout), `too-large` (response over the host's cap).
pub fn fetch(req: &Request) -> Result<Response, Error> {
    abi::require_host("http.fetch")?;
    // The header list is lowered as an array of records that borrow the
    // request's strings; it only has to live until the call returns.
    let headers: Vec<RawHeader> = req
        .headers
        .iter()
        .map(|h| RawHeader {
            name: h.name.as_ptr(),
            name_len: h.name.len(),
            value: h.value.as_ptr(),
            value_len: h.value.len(),
        })
        .collect();
    let (body_is_some, body_ptr, body_len) = match &req.body {
        Some(body) => (1, body.as_ptr(), body.len()),
        None => (0, std::ptr::null(), 0),
    };
    let (timeout_is_some, timeout) = match req.timeout_ms {
        Some(ms) => (1, ms as i32),
        None => (0, 0),
    };
    let mut area = RetArea::new();
    // SAFETY: every pointer is live for the call; the host writes a
    // `result<response, error>` into `area` and allocates the response's
    // strings and header array through cabi_realloc, which we take over.
    unsafe {
        raw::http_fetch(
            req.method.as_ptr(),
            req.method.len(),
            req.url.as_ptr(),
            req.url.len(),
            headers.as_ptr() as *const u8,
            headers.len(),
            body_is_some,
            body_ptr,
            body_len,
            timeout_is_some,
            timeout,
            area.ptr(),
        );
        drop(headers);
        if let Some(err) = area.take_error() {
            return Err(err);
        }
        let status = area.u16(4);
        let (list_ptr, count) = (area.u32(8) as usize, area.u32(12) as usize);
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let rec = list_ptr + i * HEADER_SIZE;
            out.push(Header {
                name: abi::take_string(abi::read_u32(rec) as usize, abi::read_u32(rec + 4) as usize),
                value: abi::take_string(abi::read_u32(rec + 8) as usize, abi::read_u32(rec + 12) as usize),
            });
        }
        abi::free_array(list_ptr, HEADER_SIZE, HEADER_ALIGN, count);
        let body = area.take_string(16);
        Ok(Response { status, headers: out, body })
    }
}
