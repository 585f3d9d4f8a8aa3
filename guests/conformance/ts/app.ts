// The conformance scenario (guests/conformance/README.md) in TypeScript.
import bus from "ionflux:transform/bus@0.1.0";
import config from "ionflux:transform/config@0.1.0";
import http from "ionflux:transform/http@0.1.0";
import log, { type Level } from "ionflux:transform/log@0.1.0";
import pod from "ionflux:transform/pod@0.1.0";
import { importError, isDenied, transform } from "../../ts/ionflux";

function call(data: Record<string, unknown>): unknown {
  const s = (key: string): string => String(data[key]);
  switch (data.call) {
    case "log":
      return log.write(s("level") as Level, s("message")) ?? null;
    case "config":
      return config.get(s("key"));
    case "pod-get":
      return pod.get(s("reference"));
    case "pod-put":
      return pod.put(s("path"), s("data"));
    case "bus":
      return bus.publish(s("subject"), s("payload")) ?? null;
    case "http": {
      const r = http.fetch({ method: "GET", url: s("url"), headers: [], body: null, timeoutMs: null });
      return { status: r.status, body: r.body };
    }
    default:
      throw new Error(`unknown call ${String(data.call)}`);
  }
}

export const run = transform((data) => {
  switch (data.call) {
    case "upper":
      return { text: String(data.text).toUpperCase() };
    case "trap":
      throw new Error("trapping on purpose");
    case "spin":
      for (;;) {}
  }
  try {
    return { ok: call(data) };
  } catch (e) {
    const error = importError(e);
    if (error === null) throw e;
    return { error: { case: error.tag, message: error.val, denied: isDenied(e) } };
  }
});
