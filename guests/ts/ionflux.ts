// Helpers for IONFLUX transforms in TypeScript (bundled into the transform by esbuild).
import type { ErrorCase, IonError } from "ionflux:transform/types@0.1.0";

export type { ErrorCase, IonError };

const CASES: ReadonlySet<string> = new Set([
  "denied",
  "not-found",
  "invalid",
  "too-large",
  "unavailable",
  "failed",
]);

function isCase(e: unknown): e is IonError {
  return (
    typeof e === "object" &&
    e !== null &&
    CASES.has((e as { tag?: unknown }).tag as string) &&
    typeof (e as { val?: unknown }).val === "string"
  );
}

/**
 * The world's error in `e`, or null: an import throws an `Error` whose
 * `payload` is `{ tag, val }` (componentize-qjs); `ionError` makes the bare value.
 */
export function importError(e: unknown): IonError | null {
  if (isCase(e)) return e;
  const payload = typeof e === "object" && e !== null ? (e as { payload?: unknown }).payload : undefined;
  return isCase(payload) ? payload : null;
}

/** Whether `e` is IONWALL's refusal (the message names the scope and the reason). */
export function isDenied(e: unknown): boolean {
  return importError(e)?.tag === "denied";
}

/** An error for `run` to throw: `throw ionError("invalid", "field text is missing")`. */
export function ionError(tag: ErrorCase, val: string): IonError {
  return { tag, val };
}

/**
 * `run` for a JSON object in and a JSON value out:
 * `export const run = transform((data) => ({ text: String(data.text).toUpperCase() }));`
 * An import's error thrown by `handle` passes out as `run`'s error with the same case;
 * anything else thrown traps (the host reports a GuestTrap), as an uncaught exception does.
 */
export function transform(handle: (data: Record<string, unknown>) => unknown): (input: string) => string {
  return (input: string): string => {
    let data: unknown;
    try {
      data = JSON.parse(input);
    } catch (e) {
      throw ionError("invalid", `input is not JSON: ${String(e)}`);
    }
    if (typeof data !== "object" || data === null || Array.isArray(data)) {
      throw ionError("invalid", "input must be a JSON object");
    }
    try {
      return JSON.stringify(handle(data as Record<string, unknown>));
    } catch (e) {
      throw importError(e) ?? e;
    }
  };
}
