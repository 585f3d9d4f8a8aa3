//! Test guest `huge-output`: `{"bytes": N}` returns exactly N bytes, for the
//! host's output-size limit. For N >= 2 the output is a JSON string literal
//! (`"xxx…"`), so it is valid JSON and only its size can be refused; N = 1
//! gives `0` and N = 0 the empty (non-JSON) string.

use ionflux_pdk::json;
use ionflux_pdk::Error;

fn run(input: &str) -> Result<String, Error> {
    let input = json::parse_input(input)?;
    let n = input
        .opt_u64("bytes")?
        .ok_or_else(|| Error::Invalid("field `bytes` is required (a non-negative integer)".into()))?;
    let n = usize::try_from(n).map_err(|_| Error::Invalid(format!("field `bytes` is too large: {n}")))?;
    Ok(match n {
        0 => String::new(),
        1 => "0".to_string(),
        _ => {
            let mut out = String::with_capacity(n);
            out.push('"');
            out.extend(std::iter::repeat('x').take(n - 2));
            out.push('"');
            out
        }
    })
}

ionflux_pdk::export!(run);
