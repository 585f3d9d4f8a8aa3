;; extism-echo: an Extism plugin whose `run` returns its input unchanged.
;;
;; It exists for one benchmark: the same trivial transform (see
;; transforms_src/testing/echo) run through the Extism Python SDK and through
;; IONFLUX's own Extism ABI support, against the component-model path. It is
;; written in WAT rather than with an Extism PDK because no Extism PDK builds
;; with Debian's rustc 1.63, and the kernel ABI it needs is seven functions.
;;
;; Extism kernel ABI (module `extism:host/env`): the input lives in the
;; kernel's memory, read with input_load_u64/u8 at offsets from the start of
;; the input; output must be written into a kernel block (alloc + store_*)
;; and named with output_set. Kernel offsets are i64. `run` returns 0 for
;; success.
(module
  (import "extism:host/env" "input_length" (func $input_length (result i64)))
  (import "extism:host/env" "input_load_u8" (func $input_load_u8 (param i64) (result i32)))
  (import "extism:host/env" "input_load_u64" (func $input_load_u64 (param i64) (result i64)))
  (import "extism:host/env" "alloc" (func $alloc (param i64) (result i64)))
  (import "extism:host/env" "store_u8" (func $store_u8 (param i64 i32)))
  (import "extism:host/env" "store_u64" (func $store_u64 (param i64 i64)))
  (import "extism:host/env" "output_set" (func $output_set (param i64 i64)))

  (func (export "run") (result i32)
    (local $len i64)
    (local $out i64)
    (local $i i64)
    (local.set $len (call $input_length))
    (local.set $out (call $alloc (local.get $len)))
    ;; Eight bytes at a time while a whole word remains...
    (block $words_done
      (loop $words
        (br_if $words_done
          (i64.gt_u (i64.add (local.get $i) (i64.const 8)) (local.get $len)))
        (call $store_u64
          (i64.add (local.get $out) (local.get $i))
          (call $input_load_u64 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 8)))
        (br $words)))
    ;; ...then the last 0-7 bytes one by one.
    (block $bytes_done
      (loop $bytes
        (br_if $bytes_done (i64.ge_u (local.get $i) (local.get $len)))
        (call $store_u8
          (i64.add (local.get $out) (local.get $i))
          (call $input_load_u8 (local.get $i)))
        (local.set $i (i64.add (local.get $i) (i64.const 1)))
        (br $bytes)))
    (call $output_set (local.get $out) (local.get $len))
    (i32.const 0)))
