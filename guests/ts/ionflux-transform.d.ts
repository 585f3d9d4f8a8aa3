// TypeScript declarations of the `ionflux:transform@0.1.0` world (wit/transform.wit)
// as componentize-qjs exposes it: each interface is the default export of a
// module named after it; a `result<T, error>` returns T or throws an Error whose
// `payload` is an `IonError` (`run` throws the bare `IonError`);
// `option<T>` is `T | null`; records have camelCase fields; enums are strings.
// tests/test_guest_typescript.py checks this file against wit/ (every interface,
// function, parameter, record field and error case).

declare module "ionflux:transform/types@0.1.0" {
  /** The cases of `variant error`. */
  export type ErrorCase = "denied" | "not-found" | "invalid" | "too-large" | "unavailable" | "failed";
  /** The world's error, e.g. `{ tag: "denied", val: "<scope>: <reason>" }`: an import throws
   * an Error with it as `payload`; `run` throws it bare (see guests/ts/ionflux.ts). */
  export interface IonError {
    tag: ErrorCase;
    val: string;
  }
}

declare module "ionflux:transform/log@0.1.0" {
  /** `enum level`. */
  export type Level = "debug" | "info" | "warn" | "error";
  /** Scope: `emit_log:<level>`. */
  const log: {
    write(level: Level, message: string): void;
  };
  export default log;
}

declare module "ionflux:transform/config@0.1.0" {
  /** Scope: `read_config:<key>`. */
  const config: {
    get(key: string): string | null;
  };
  export default config;
}

declare module "ionflux:transform/pod@0.1.0" {
  /** Scopes: `read_pod_data:<path or CID>`, `write_pod_data:<path>`. */
  const pod: {
    get(reference: string): string;
    put(path: string, data: string): string;
  };
  export default pod;
}

declare module "ionflux:transform/bus@0.1.0" {
  /** Scope: `publish_nats_topic:<subject>`. */
  const bus: {
    publish(subject: string, payload: string): void;
  };
  export default bus;
}

declare module "ionflux:transform/http@0.1.0" {
  export interface Header {
    name: string;
    value: string;
  }
  export interface Request {
    method: string;
    url: string;
    headers: Header[];
    body: string | null;
    timeoutMs: number | null;
  }
  export interface Response {
    status: number;
    headers: Header[];
    body: string;
  }
  /** Scope: `http_fetch:<host>[:<port>]`. Redirects are not followed. */
  const http: {
    fetch(req: Request): Response;
  };
  export default http;
}
