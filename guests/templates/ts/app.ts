// {{name}}: {"text": s} -> {"text": S}. Built by `ionflux build` (tsc, esbuild, componentize-qjs).
import log from "ionflux:transform/log@0.1.0";
import { ionError, isDenied, transform } from "./ionflux";

export const run = transform((data) => {
  if (typeof data.text !== "string") throw ionError("invalid", "field `text` must be a string");
  try {
    log.write("info", "upper-casing"); // needs the scope emit_log:info
  } catch (e) {
    if (!isDenied(e)) throw e;
  }
  return { text: data.text.toUpperCase() };
});
