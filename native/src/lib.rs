//! The native call path of the IONFLUX host (``ionflux.runtime._ionflux_native``).
//!
//! One Python call, ``Engine.call``, makes a fresh ``Store`` (its own memory,
//! fuel, epoch deadline and limits), instantiates a component from its
//! ``InstancePre`` (pooling allocator: warm slots, no mmap per call), calls
//! ``run`` and hands back the output, all with the GIL released. The imports
//! are the world's (``wit/``, through ``bindgen!``); each one takes the GIL
//! back and calls the Python function that resolves the concrete scope, asks
//! the IONWALL gate (which audits the decision) and only then acts
//! (``ionflux.runtime._imports``). Nothing here decides on a capability.
//!
//! Failures are not raised: ``call`` returns ``(kind, a, b, fuel_used)`` and
//! the Python side (``runtime/_native.py``) turns each kind into its typed
//! error, with the same wording as the wasmtime-py path (trap texts are
//! wasmtime's own ``{:?}`` rendering, as wasmtime-py shows them).

use std::collections::HashSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString, PyTuple};
use wasmtime::component::{Component, ComponentExportIndex, HasSelf, InstancePre, Linker};
use wasmtime::{
    Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store,
    StoreLimits, StoreLimitsBuilder, UpdateDeadline,
};

wasmtime::component::bindgen!({
    path: "../wit",
    world: "transform",
    imports: { default: trappable },
});

use ionflux::transform::types::Error as GuestErr;
use ionflux::transform::{bus, config, http, log, pod, types};

/// Kinds of `Engine.call`'s answer.
const OK: u8 = 0;
const GUEST_ERROR: u8 = 1; // (tag, message)
const TRAP: u8 = 2; // (text, None)
const OUTPUT_TOO_LARGE: u8 = 3; // (size, None)

/// The texts `_cancel` and `classify_trap` know (runtime/_cancel.py).
const CANCELLED: &str = "ionflux: the call's run was cancelled";
const DEADLINE: &str = "ionflux: the call's deadline ran out";

const EPOCH_TICK: Duration = Duration::from_millis(5);

// --- the epoch ticker -------------------------------------------------------

struct TickState {
    active: usize,
    stopped: bool,
    started: bool,
}

/// Advances the engine's epoch every 5 ms while a call is in flight and parks
/// (an untimed wait) while none is; stopped, it still ticks for calls in flight.
struct Ticker {
    engine: Engine,
    state: Mutex<TickState>,
    wake: Condvar,
}

impl Ticker {
    fn enter(self: &Arc<Self>) {
        let mut s = self.state.lock().unwrap();
        s.active += 1;
        if !s.started {
            s.started = true;
            let me = Arc::clone(self);
            std::thread::Builder::new()
                .name("ionflux-epoch".into())
                .spawn(move || me.run())
                .expect("epoch thread");
        } else if s.active == 1 {
            self.wake.notify_one();
        }
    }

    fn leave(&self) {
        let mut s = self.state.lock().unwrap();
        s.active -= 1;
        if s.active == 0 && s.stopped {
            self.wake.notify_one();
        }
    }

    fn run(&self) {
        loop {
            {
                let mut s = self.state.lock().unwrap();
                while s.active == 0 {
                    if s.stopped {
                        s.started = false;
                        return;
                    }
                    s = self.wake.wait(s).unwrap();
                }
            }
            std::thread::sleep(EPOCH_TICK);
            self.engine.increment_epoch();
        }
    }
}

/// Leaves the ticker when dropped, whatever way the call ends.
struct InFlight<'a>(&'a Arc<Ticker>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

// --- cancelled runs ---------------------------------------------------------

static CANCELLED_RUNS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn is_cancelled(run_id: &str) -> bool {
    CANCELLED_RUNS
        .lock()
        .unwrap()
        .as_ref()
        .is_some_and(|s| s.contains(run_id))
}

/// Marks (or unmarks) a run cancelled: its calls in flight stop at their next
/// tick. Mirrors `_cancel._cancelled` (the Python side keeps both in step).
#[pyfunction]
fn set_cancelled(run_id: &str, cancelled: bool) {
    let mut guard = CANCELLED_RUNS.lock().unwrap();
    let set = guard.get_or_insert_with(HashSet::new);
    if cancelled {
        set.insert(run_id.to_owned());
    } else {
        set.remove(run_id);
    }
}

// --- the imports: each one asks Python ----------------------------------------

/// The Python functions behind the world's imports (`_imports.IMPORTS`), and
/// the two classes wasmtime-py uses for values, which those functions speak.
struct PyImports {
    log_write: Py<PyAny>,
    config_get: Py<PyAny>,
    pod_get: Py<PyAny>,
    pod_put: Py<PyAny>,
    bus_publish: Py<PyAny>,
    http_fetch: Py<PyAny>,
    variant: Py<PyAny>,
    record: Py<PyAny>,
}

struct Ctx {
    limits: StoreLimits,
    imports: Arc<PyImports>,
}

type HostResult<T> = wasmtime::Result<Result<T, GuestErr>>;

fn guest_err(tag: &str, message: String) -> GuestErr {
    match tag {
        "denied" => GuestErr::Denied(message),
        "not-found" => GuestErr::NotFound(message),
        "invalid" => GuestErr::Invalid(message),
        "too-large" => GuestErr::TooLarge(message),
        "unavailable" => GuestErr::Unavailable(message),
        _ => GuestErr::Failed(message),
    }
}

impl Ctx {
    /// Calls one import's Python function (`fn(store, *args)`) with the GIL;
    /// an exception escaping it traps the guest (it never reaches wasmtime as
    /// a half-done answer). `ok` converts the answer that is not an error.
    fn ask<T>(
        &self,
        func: fn(&PyImports) -> &Py<PyAny>,
        args: impl FnOnce(Python<'_>, &PyImports) -> PyResult<Vec<Py<PyAny>>>,
        ok: impl FnOnce(&Bound<'_, PyAny>, &PyImports) -> PyResult<T>,
    ) -> HostResult<T> {
        let imports = &*self.imports;
        Python::attach(|py| {
            let answer = (|| -> PyResult<Result<T, GuestErr>> {
                let mut argv = vec![py.None()];
                argv.extend(args(py, imports)?);
                let tuple = PyTuple::new(py, argv)?;
                let answer = func(imports).bind(py).call1(tuple)?;
                if answer.is_instance(imports.variant.bind(py))? {
                    let tag: String = answer.getattr("tag")?.extract()?;
                    let payload = answer.getattr("payload")?.str()?.to_string();
                    return Ok(Err(guest_err(&tag, payload)));
                }
                Ok(Ok(ok(&answer, imports)?))
            })();
            answer.map_err(|err| wasmtime::format_err!("host import raised {}", err.to_string()))
        })
    }
}

fn text(py: Python<'_>, s: &str) -> Py<PyAny> {
    PyString::new(py, s).into_any().unbind()
}

fn opt_string(value: &Bound<'_, PyAny>) -> PyResult<Option<String>> {
    if value.is_none() {
        Ok(None)
    } else {
        Ok(Some(value.extract()?))
    }
}

impl types::Host for Ctx {}

impl log::Host for Ctx {
    fn write(&mut self, level: log::Level, message: String) -> HostResult<()> {
        let level = match level {
            log::Level::Debug => "debug",
            log::Level::Info => "info",
            log::Level::Warn => "warn",
            log::Level::Error => "error",
        };
        self.ask(
            |i| &i.log_write,
            |py, _| Ok(vec![text(py, level), text(py, &message)]),
            |_, _| Ok(()),
        )
    }
}

impl config::Host for Ctx {
    fn get(&mut self, key: String) -> HostResult<Option<String>> {
        self.ask(
            |i| &i.config_get,
            |py, _| Ok(vec![text(py, &key)]),
            |v, _| opt_string(v),
        )
    }
}

impl pod::Host for Ctx {
    fn get(&mut self, reference: String) -> HostResult<String> {
        self.ask(
            |i| &i.pod_get,
            |py, _| Ok(vec![text(py, &reference)]),
            |v, _| v.extract(),
        )
    }

    fn put(&mut self, path: String, data: String) -> HostResult<String> {
        self.ask(
            |i| &i.pod_put,
            |py, _| Ok(vec![text(py, &path), text(py, &data)]),
            |v, _| v.extract(),
        )
    }
}

impl bus::Host for Ctx {
    fn publish(&mut self, subject: String, payload: String) -> HostResult<()> {
        self.ask(
            |i| &i.bus_publish,
            |py, _| Ok(vec![text(py, &subject), text(py, &payload)]),
            |_, _| Ok(()),
        )
    }
}

fn record<'py>(
    py: Python<'py>,
    imports: &PyImports,
    fields: &[(&str, Py<PyAny>)],
) -> PyResult<Py<PyAny>> {
    let rec = imports.record.bind(py).call0()?;
    for (name, value) in fields {
        rec.setattr(*name, value)?;
    }
    Ok(rec.unbind())
}

fn headers_of(value: &Bound<'_, PyAny>) -> PyResult<Vec<http::Header>> {
    let mut out = Vec::new();
    for item in value.try_iter()? {
        let item = item?;
        out.push(http::Header {
            name: item.getattr("name")?.extract()?,
            value: item.getattr("value")?.extract()?,
        });
    }
    Ok(out)
}

impl http::Host for Ctx {
    fn fetch(&mut self, req: http::Request) -> HostResult<http::Response> {
        self.ask(
            |i| &i.http_fetch,
            |py, imports| {
                let mut headers = Vec::with_capacity(req.headers.len());
                for h in &req.headers {
                    headers.push(record(
                        py,
                        imports,
                        &[("name", text(py, &h.name)), ("value", text(py, &h.value))],
                    )?);
                }
                let body = match &req.body {
                    Some(b) => text(py, b),
                    None => py.None(),
                };
                let timeout = match req.timeout_ms {
                    Some(ms) => ms.into_pyobject(py)?.into_any().unbind(),
                    None => py.None(),
                };
                Ok(vec![record(
                    py,
                    imports,
                    &[
                        ("method", text(py, &req.method)),
                        ("url", text(py, &req.url)),
                        ("headers", PyList::new(py, headers)?.into_any().unbind()),
                        ("body", body),
                        ("timeout-ms", timeout),
                    ],
                )?])
            },
            |v, _| {
                Ok(http::Response {
                    status: v.getattr("status")?.extract()?,
                    headers: headers_of(&v.getattr("headers")?)?,
                    body: v.getattr("body")?.extract()?,
                })
            },
        )
    }
}

// --- the engine ---------------------------------------------------------------

/// Compiled code is only valid for this wasmtime build and these settings.
const WASMTIME_VERSION: &str = "48.0.8";

#[pyclass(frozen, module = "ionflux.runtime._ionflux_native")]
struct NativeEngine {
    engine: Engine,
    linker: Linker<Ctx>,
    imports: Arc<PyImports>,
    ticker: Arc<Ticker>,
}

#[pyclass(frozen, module = "ionflux.runtime._ionflux_native")]
struct NativeComponent {
    component: Component,
    pre: InstancePre<Ctx>,
    run: ComponentExportIndex,
}

// `run`'s answer is lifted as an owned String: wasmtime calls the guest's
// post-return (which frees the returned buffer) inside `call`, so a `WasmStr`
// read afterwards would read freed guest memory (a QuickJS guest reuses it at
// once). The one copy is bounded by the guest's memory limit; the size check
// follows it and nothing over `max_output_bytes` reaches Python.
type RunFunc = wasmtime::component::TypedFunc<(String,), (Result<String, GuestErr>,)>;

fn value_error(message: String) -> PyErr {
    PyValueError::new_err(message)
}

/// wasmtime's error as wasmtime-py shows it (its message, then "Caused by:"
/// and each cause numbered), which is what `classify_trap` reads: the wasm
/// backtrace (function names: how an out-of-memory trap is told apart) and the
/// trap itself.
fn render(err: &wasmtime::Error) -> String {
    use std::fmt::Write;
    let mut out = format!("{err}");
    let causes: Vec<String> = err.chain().skip(1).map(|c| c.to_string()).collect();
    if !causes.is_empty() {
        out.push_str("\n\nCaused by:");
        for (i, cause) in causes.iter().enumerate() {
            let _ = write!(out, "\n    {i}: {cause}");
        }
    }
    out
}

fn first_line(err: &wasmtime::Error) -> String {
    let text = format!("{err}");
    text.lines().next().unwrap_or("").to_string()
}

impl NativeEngine {
    fn store(&self, fuel: u64, ticks: u64, limits: StoreLimits) -> PyResult<Store<Ctx>> {
        let mut store = Store::new(
            &self.engine,
            Ctx {
                limits,
                imports: Arc::clone(&self.imports),
            },
        );
        store.limiter(|ctx| &mut ctx.limits);
        store
            .set_fuel(fuel)
            .map_err(|e| PyRuntimeError::new_err(render(&e)))?;
        store.set_epoch_deadline(ticks);
        Ok(store)
    }

    fn prepare(&self, component: Component) -> PyResult<NativeComponent> {
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            value_error(format!(
                "component cannot be instantiated: {}",
                first_line(&e)
            ))
        })?;
        let run = component.get_export_index(None, "run").ok_or_else(|| {
            value_error(
                "component does not export `run` (world ionflux:transform/transform)".into(),
            )
        })?;
        Ok(NativeComponent {
            component,
            pre,
            run,
        })
    }
}

#[pymethods]
impl NativeEngine {
    /// ``imports`` maps ``"log.write"``, ``"config.get"``, ``"pod.get"``,
    /// ``"pod.put"``, ``"bus.publish"``, ``"http.fetch"`` to Python functions.
    #[new]
    #[pyo3(signature = (*, max_wasm_stack_bytes, sandboxes, max_memory_bytes, imports, variant, record))]
    fn new(
        max_wasm_stack_bytes: usize,
        sandboxes: u32,
        max_memory_bytes: usize,
        imports: &Bound<'_, pyo3::types::PyDict>,
        variant: Py<PyAny>,
        record: Py<PyAny>,
    ) -> PyResult<Self> {
        let get = |name: &str| -> PyResult<Py<PyAny>> {
            Ok(imports
                .get_item(name)?
                .ok_or_else(|| value_error(format!("no import {name}")))?
                .unbind())
        };
        let py_imports = Arc::new(PyImports {
            log_write: get("log.write")?,
            config_get: get("config.get")?,
            pod_get: get("pod.get")?,
            pod_put: get("pod.put")?,
            bus_publish: get("bus.publish")?,
            http_fetch: get("http.fetch")?,
            variant,
            record,
        });
        // No threads or shared memory: the crate is built without the
        // `threads` feature, so those proposals are refused at compile time.
        // Room for twice the calls allowed at once: the instance that checks a
        // module at publish time, and slack (as the wasmtime-py engine).
        let slots = sandboxes.saturating_mul(2).max(2);
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(4))
            .total_memories(slots.saturating_mul(2))
            .total_tables(slots.saturating_mul(4))
            .max_memory_size(max_memory_bytes)
            // A slot given back is reset by memset of the pages it dirtied (the
            // kernel reports which, PAGEMAP_SCAN, Linux 6.7+) instead of an
            // madvise of the whole memory: most calls touch a few pages.
            .linear_memory_keep_resident(1 << 20)
            .table_keep_resident(1 << 16)
            .pagemap_scan(Enabled::Auto);
        let mut config = Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(true)
            .max_wasm_stack(max_wasm_stack_bytes)
            .wasm_component_model(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| PyRuntimeError::new_err(render(&e)))?;
        let mut linker: Linker<Ctx> = Linker::new(&engine);
        Transform::add_to_linker::<Ctx, HasSelf<Ctx>>(&mut linker, |ctx| ctx)
            .map_err(|e| PyRuntimeError::new_err(render(&e)))?;
        let ticker = Arc::new(Ticker {
            engine: engine.clone(),
            state: Mutex::new(TickState {
                active: 0,
                stopped: false,
                started: false,
            }),
            wake: Condvar::new(),
        });
        Ok(NativeEngine {
            engine,
            linker,
            imports: py_imports,
            ticker,
        })
    }

    #[classattr]
    fn wasmtime_version() -> &'static str {
        WASMTIME_VERSION
    }

    /// Compiles a component (GIL released) and links it against the world:
    /// ``ValueError`` if it does not compile or asks for anything else.
    fn compile(&self, py: Python<'_>, data: &[u8]) -> PyResult<NativeComponent> {
        let component = py
            .detach(|| Component::new(&self.engine, data))
            .map_err(|e| value_error(format!("component does not compile: {}", first_line(&e))))?;
        self.prepare(component)
    }

    /// A component serialized by ``NativeComponent.serialize`` with this
    /// engine's build and settings (wasmtime refuses any other).
    ///
    /// The file is native code wasmtime trusts: the cache folder is private.
    fn deserialize_file(&self, py: Python<'_>, path: &str) -> PyResult<NativeComponent> {
        // SAFETY: the cache folder is created 0700 by the host and written
        // atomically; whoever can write there already controls the host.
        let component = py
            .detach(|| unsafe { Component::deserialize_file(&self.engine, path) })
            .map_err(|e| value_error(render(&e)))?;
        self.prepare(component)
    }

    /// Whether a call is in flight (so the epoch advances).
    fn ticking(&self) -> bool {
        self.ticker.state.lock().unwrap().active > 0
    }

    /// Whether the ticker thread is running (for tests: idle, it exits only when stopped).
    fn ticker_started(&self) -> bool {
        self.ticker.state.lock().unwrap().started
    }

    /// Stops ticking once no call is in flight (calls still end by their deadline).
    fn stop(&self) {
        let mut s = self.ticker.state.lock().unwrap();
        s.stopped = true;
        self.ticker.wake.notify_one();
    }

    /// Instantiates once with a bounded store and checks that ``run`` has the
    /// world's signature: ``ValueError`` naming what is wrong.
    fn check(&self, py: Python<'_>, component: &NativeComponent) -> PyResult<()> {
        let limits = StoreLimitsBuilder::new().build();
        let mut store = self.store(10_000_000, ticks_for(1_000), limits)?;
        py.detach(|| {
            self.ticker.enter();
            let _in_flight = InFlight(&self.ticker);
            let instance = component
                .pre
                .instantiate(&mut store)
                .map_err(|e| format!("component cannot be instantiated: {}", trap_reason(&e)))?;
            instance
                .get_typed_func::<(String,), (Result<String, GuestErr>,)>(
                    &mut store,
                    &component.run,
                )
                .map_err(|_| {
                    "`run` must be `func(input: string) -> result<string, error>` \
                     (world ionflux:transform/transform)"
                        .to_string()
                })?;
            Ok(())
        })
        .map_err(value_error)
    }

    /// One call in a fresh sandbox. Returns ``(kind, a, b, fuel_used)``:
    /// ``(0, output, None, fuel)``, ``(1, tag, message, fuel)`` (``run``'s
    /// error), ``(2, trap_text, None, fuel)``, ``(3, output_size, None, fuel)``
    /// (over ``max_output_bytes``: none of it reached Python). ``run_id`` (a
    /// call of a run) is watched tick by tick for cancellation.
    #[pyo3(signature = (component, input, *, fuel, ticks, memory_bytes, table_elements, instances, max_output_bytes, run_id=None))]
    #[allow(clippy::too_many_arguments)]
    fn call<'py>(
        &self,
        py: Python<'py>,
        component: &NativeComponent,
        input: String,
        fuel: u64,
        ticks: u64,
        memory_bytes: usize,
        table_elements: usize,
        instances: usize,
        max_output_bytes: usize,
        run_id: Option<String>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(memory_bytes)
            .table_elements(table_elements)
            .instances(instances)
            .build();
        let mut store = self.store(fuel, ticks, limits)?;
        if let Some(run_id) = run_id {
            // One tick at a time: cancelled, or out of its own ticks, it traps.
            let mut left = ticks;
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(move |_| {
                if is_cancelled(&run_id) {
                    return Err(wasmtime::format_err!("{CANCELLED}"));
                }
                left = left.saturating_sub(1);
                if left == 0 {
                    return Err(wasmtime::format_err!("{DEADLINE}"));
                }
                Ok(UpdateDeadline::Continue(1))
            });
        }
        enum Outcome {
            Ok(String),
            Guest(String, String),
            Trap(String),
            TooLarge(usize),
        }
        let (outcome, store) = py.detach(move || {
            self.ticker.enter();
            let _in_flight = InFlight(&self.ticker);
            let result = (|| -> wasmtime::Result<Result<String, GuestErr>> {
                let instance = component.pre.instantiate(&mut store)?;
                let run: RunFunc = instance.get_typed_func(&mut store, &component.run)?;
                let (answer,) = run.call(&mut store, (input,))?;
                Ok(answer)
            })();
            let outcome = match result {
                Ok(Ok(text)) if text.len() > max_output_bytes => Outcome::TooLarge(text.len()),
                Ok(Ok(text)) => Outcome::Ok(text),
                Ok(Err(err)) => {
                    let (tag, msg) = match err {
                        GuestErr::Denied(m) => ("denied", m),
                        GuestErr::NotFound(m) => ("not-found", m),
                        GuestErr::Invalid(m) => ("invalid", m),
                        GuestErr::TooLarge(m) => ("too-large", m),
                        GuestErr::Unavailable(m) => ("unavailable", m),
                        GuestErr::Failed(m) => ("failed", m),
                    };
                    Outcome::Guest(tag.to_string(), msg)
                }
                Err(e) => Outcome::Trap(render(&e)),
            };
            (outcome, store)
        });
        let fuel_used = fuel.saturating_sub(store.get_fuel().unwrap_or(0));
        let answer = match outcome {
            Outcome::Ok(s) => (OK, text(py, &s), py.None(), fuel_used),
            Outcome::Guest(tag, msg) => (GUEST_ERROR, text(py, &tag), text(py, &msg), fuel_used),
            Outcome::Trap(t) => (TRAP, text(py, &t), py.None(), fuel_used),
            Outcome::TooLarge(size) => (
                OUTPUT_TOO_LARGE,
                size.into_pyobject(py)?.into_any().unbind(),
                py.None(),
                fuel_used,
            ),
        };
        // The slot goes back to the pool here, before the next caller takes it.
        drop(store);
        PyTuple::new(
            py,
            [
                answer.0.into_pyobject(py)?.into_any().unbind(),
                answer.1,
                answer.2,
                answer.3.into_pyobject(py)?.into_any().unbind(),
            ],
        )
    }
}

#[pymethods]
impl NativeComponent {
    /// The compiled code, for the disk cache (``NativeEngine.deserialize_file``).
    fn serialize<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let data = py
            .detach(|| self.component.serialize())
            .map_err(|e| PyRuntimeError::new_err(render(&e)))?;
        Ok(PyBytes::new(py, &data))
    }
}

/// The top-level imports a component asks for (their names), read from its
/// bytes without compiling it: how the host picks an engine for it.
#[pyfunction]
fn component_imports(data: &[u8]) -> PyResult<Vec<String>> {
    use wasmparser::{Parser, Payload};
    let mut names = Vec::new();
    let mut depth = 0usize;
    for payload in Parser::new(0).parse_all(data) {
        let payload = payload.map_err(|e| value_error(format!("component does not parse: {e}")))?;
        match payload {
            Payload::ModuleSection { .. } | Payload::ComponentSection { .. } => depth += 1,
            Payload::End(_) => depth = depth.saturating_sub(1),
            Payload::ComponentImportSection(reader) if depth == 0 => {
                for import in reader {
                    let import = import
                        .map_err(|e| value_error(format!("component does not parse: {e}")))?;
                    // A type import (`use types.{error}` at the world's level)
                    // grants nothing; the checks are about what can be called.
                    if !matches!(import.ty, wasmparser::ComponentTypeRef::Type(_)) {
                        names.push(import.name.name.to_string());
                    }
                }
            }
            _ => {}
        }
    }
    Ok(names)
}

fn ticks_for(timeout_ms: u64) -> u64 {
    let tick = EPOCH_TICK.as_millis() as u64;
    timeout_ms.div_ceil(tick).max(1) + 1
}

fn trap_reason(err: &wasmtime::Error) -> String {
    let text = render(err);
    for line in text.lines() {
        let line = line.trim();
        let line = match line.split_once(": ") {
            Some((n, rest)) if n.chars().all(|c| c.is_ascii_digit()) => rest,
            _ => line,
        };
        if let Some(rest) = line.strip_prefix("wasm trap:") {
            return rest.trim().to_string();
        }
    }
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .last()
        .unwrap_or("unknown trap")
        .to_string()
}

#[pymodule]
fn _ionflux_native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeEngine>()?;
    m.add_class::<NativeComponent>()?;
    m.add_function(wrap_pyfunction!(component_imports, m)?)?;
    m.add_function(wrap_pyfunction!(set_cancelled, m)?)?;
    m.add("OK", OK)?;
    m.add("GUEST_ERROR", GUEST_ERROR)?;
    m.add("TRAP", TRAP)?;
    m.add("OUTPUT_TOO_LARGE", OUTPUT_TOO_LARGE)?;
    m.add("WASMTIME_VERSION", WASMTIME_VERSION)?;
    Ok(())
}
