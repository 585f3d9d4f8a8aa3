// The conformance scenario (guests/conformance/README.md) in AssemblyScript,
// an Extism plugin: the input is passed as the ionflux_* host function's JSON
// request (the host reads only the fields it needs) and its answer returned.
import { Host, Memory } from "@extism/as-pdk";

@external("extism:host/env", "length")
declare function kernel_length(offset: u64): u64;
@external("extism:host/user", "ionflux_log")
declare function ionflux_log(request: u64): u64;
@external("extism:host/user", "ionflux_config_get")
declare function ionflux_config_get(request: u64): u64;
@external("extism:host/user", "ionflux_pod_get")
declare function ionflux_pod_get(request: u64): u64;
@external("extism:host/user", "ionflux_pod_put")
declare function ionflux_pod_put(request: u64): u64;
@external("extism:host/user", "ionflux_bus_publish")
declare function ionflux_bus_publish(request: u64): u64;
@external("extism:host/user", "ionflux_http_fetch")
declare function ionflux_http_fetch(request: u64): u64;

// Called by AssemblyScript on an assertion or a bad index: trap.
export function abort(message: string | null, file: string | null, line: u32, column: u32): void {
  unreachable();
}

/** The string value of `"key": "..."` in `json` (no escapes in our inputs), or null. */
function field(json: string, key: string): string | null {
  let at = json.indexOf('"' + key + '"');
  if (at < 0) return null;
  at = json.indexOf(":", at);
  at = json.indexOf('"', at);
  if (at < 0) return null;
  const end = json.indexOf('"', at + 1);
  return json.substring(at + 1, end);
}

function callHost(call: string, request: u64): u64 {
  if (call == "log") return ionflux_log(request);
  if (call == "config") return ionflux_config_get(request);
  if (call == "pod-get") return ionflux_pod_get(request);
  if (call == "pod-put") return ionflux_pod_put(request);
  if (call == "bus") return ionflux_bus_publish(request);
  if (call == "http") return ionflux_http_fetch(request);
  return 0;
}

let spins: u64 = 0;

export function run(): i32 {
  const input = Host.inputString();
  const call = field(input, "call");
  if (call == null) {
    Host.outputString('{"error": {"case": "invalid", "message": "no call"}}');
    return 1;
  }
  if (call == "upper") {
    const text = field(input, "text");
    Host.outputString('{"text": "' + (text == null ? "" : text.toUpperCase()) + '"}');
    return 0;
  }
  if (call == "trap") unreachable();
  if (call == "spin") {
    while (true) spins++;
  }
  const request = Memory.allocateString(input);
  const answer = callHost(call, request.offset);
  request.free();
  if (answer == 0) {
    Host.outputString('{"error": {"case": "invalid", "message": "unknown call"}}');
    return 1;
  }
  Host.outputMemory(new Memory(answer, kernel_length(answer)));
  return 0;
}
