/* {{name}}: {"text": s} -> {"text": S} (ASCII), an Extism plugin in C with no libc.
 * Built by `ionflux build` (clang --target=wasm32 -nostdlib). */
#include <stdint.h>

#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))

IMPORT("extism:host/env", "input_length") uint64_t input_length(void);
IMPORT("extism:host/env", "input_load_u8") uint8_t input_load_u8(uint64_t offset);
IMPORT("extism:host/env", "alloc") uint64_t kernel_alloc(uint64_t length);
IMPORT("extism:host/env", "free") void kernel_free(uint64_t offset);
IMPORT("extism:host/env", "store_u8") void store_u8(uint64_t offset, uint8_t value);
IMPORT("extism:host/env", "output_set") void output_set(uint64_t offset, uint64_t length);
IMPORT("extism:host/user", "ionflux_log") uint64_t ionflux_log(uint64_t request);

static uint64_t block_of(const char *data, uint64_t len) {
    uint64_t block = kernel_alloc(len);
    for (uint64_t i = 0; i < len; i++) store_u8(block + i, (uint8_t)data[i]);
    return block;
}

#define MAX 65536
static char out[MAX + 16];

__attribute__((export_name("run"))) int32_t run(void) {
    /* Needs the scope emit_log:info; the answer is {"ok": null} or {"error": {...}}. */
    static const char log[] = "{\"level\": \"info\", \"message\": \"upper-casing\"}";
    uint64_t request = block_of(log, sizeof log - 1);
    kernel_free(ionflux_log(request));
    kernel_free(request);

    uint64_t len = input_length(), i = 0, n = 0;
    static const char key[] = "\"text\"";
    /* Find "text", then the opening quote of its value. */
    for (; i + sizeof key - 1 <= len; i++) {
        uint64_t k = 0;
        while (k < sizeof key - 1 && input_load_u8(i + k) == (uint8_t)key[k]) k++;
        if (k == sizeof key - 1) break;
    }
    for (i += sizeof key - 1; i < len && input_load_u8(i) != '"'; i++) {}
    if (i >= len || len > MAX) {
        static const char bad[] = "field `text` must be a string";
        output_set(block_of(bad, sizeof bad - 1), sizeof bad - 1);
        return 1;
    }
    static const char head[] = "{\"text\": \"";
    for (; n < sizeof head - 1; n++) out[n] = head[n];
    for (i++; i < len; i++) {
        char c = (char)input_load_u8(i);
        if (c == '"') break;
        if (c == '\\' && i + 1 < len) { out[n++] = c; c = (char)input_load_u8(++i); }
        else if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
        out[n++] = c;
    }
    out[n++] = '"';
    out[n++] = '}';
    output_set(block_of(out, n), n);
    return 0;
}
