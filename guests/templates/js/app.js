// {{name}}: {"text": s} -> {"text": S}. Built by `ionflux build` (esbuild, componentize-qjs).
import log from "ionflux:transform/log@0.1.0";

export function run(input) {
  const data = JSON.parse(input);
  if (typeof data.text !== "string") throw { tag: "invalid", val: "field `text` must be a string" };
  try {
    log.write("info", "upper-casing"); // needs the scope emit_log:info
  } catch (e) {
    if (e.payload?.tag !== "denied") throw e.payload ?? e;
  }
  return JSON.stringify({ text: data.text.toUpperCase() });
}
