// {{name}}: {"text": s} -> {"text": S}, an Extism plugin in AssemblyScript.
// Built by `ionflux build` (asc with @extism/as-pdk). Host functions take and
// answer JSON: see transforms_src/README.md.
import { Host, Memory } from "@extism/as-pdk";

@external("extism:host/env", "length")
declare function kernel_length(offset: u64): u64;
@external("extism:host/user", "ionflux_log")
declare function ionflux_log(request: u64): u64;

export function abort(message: string | null, file: string | null, line: u32, column: u32): void {
  unreachable();
}

/** The string value of `"key": "..."` in `json` (no escapes), or null. */
function field(json: string, key: string): string | null {
  let at = json.indexOf('"' + key + '"');
  if (at < 0) return null;
  at = json.indexOf('"', json.indexOf(":", at));
  if (at < 0) return null;
  return json.substring(at + 1, json.indexOf('"', at + 1));
}

export function run(): i32 {
  const text = field(Host.inputString(), "text");
  if (text == null) {
    Host.outputString("field `text` must be a string");
    return 1;
  }
  // Needs the scope emit_log:info; the answer is {"ok": null} or {"error": {...}}.
  const request = Memory.allocateString('{"level": "info", "message": "upper-casing"}');
  const answer = ionflux_log(request.offset);
  new Memory(answer, kernel_length(answer)).free();
  request.free();
  Host.outputString('{"text": "' + text.toUpperCase() + '"}');
  return 0;
}
