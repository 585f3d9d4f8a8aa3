/* The conformance scenario (guests/conformance/README.md) in C, an Extism
 * plugin built with clang --target=wasm32 -nostdlib: no libc, the Extism
 * kernel's functions declared by hand. The input is passed as the ionflux_*
 * host function's JSON request (the host reads only the fields it needs). */
#include <stdint.h>

#define IMPORT(module, name) __attribute__((import_module(module), import_name(name)))
#define EXPORT(name) __attribute__((export_name(name)))

IMPORT("extism:host/env", "input_length") uint64_t input_length(void);
IMPORT("extism:host/env", "input_load_u8") uint8_t input_load_u8(uint64_t offset);
IMPORT("extism:host/env", "alloc") uint64_t kernel_alloc(uint64_t length);
IMPORT("extism:host/env", "free") void kernel_free(uint64_t offset);
IMPORT("extism:host/env", "length") uint64_t kernel_length(uint64_t offset);
IMPORT("extism:host/env", "store_u8") void store_u8(uint64_t offset, uint8_t value);
IMPORT("extism:host/env", "output_set") void output_set(uint64_t offset, uint64_t length);

IMPORT("extism:host/user", "ionflux_log") uint64_t ionflux_log(uint64_t request);
IMPORT("extism:host/user", "ionflux_config_get") uint64_t ionflux_config_get(uint64_t request);
IMPORT("extism:host/user", "ionflux_pod_get") uint64_t ionflux_pod_get(uint64_t request);
IMPORT("extism:host/user", "ionflux_pod_put") uint64_t ionflux_pod_put(uint64_t request);
IMPORT("extism:host/user", "ionflux_bus_publish") uint64_t ionflux_bus_publish(uint64_t request);
IMPORT("extism:host/user", "ionflux_http_fetch") uint64_t ionflux_http_fetch(uint64_t request);

#define MAX_INPUT 65536
static char input[MAX_INPUT];
static uint64_t input_len;

static uint64_t text_len(const char *s) {
    uint64_t n = 0;
    while (s[n]) n++;
    return n;
}

/* Copies `len` bytes into a new kernel block. */
static uint64_t to_block(const char *data, uint64_t len) {
    uint64_t block = kernel_alloc(len);
    for (uint64_t i = 0; i < len; i++) store_u8(block + i, (uint8_t)data[i]);
    return block;
}

static void output(const char *data, uint64_t len) {
    output_set(to_block(data, len), len);
}

/* Where the string value of `"key"` starts in the input (after its quote), or -1. */
static int64_t find_value(const char *key) {
    uint64_t klen = text_len(key);
    for (uint64_t i = 0; i + klen + 2 <= input_len; i++) {
        if (input[i] != '"') continue;
        uint64_t j = 0;
        while (j < klen && input[i + 1 + j] == key[j]) j++;
        if (j != klen || input[i + 1 + klen] != '"') continue;
        uint64_t at = i + klen + 2;
        while (at < input_len && (input[at] == ' ' || input[at] == ':')) at++;
        if (at < input_len && input[at] == '"') return (int64_t)(at + 1);
    }
    return -1;
}

static int value_is(int64_t at, const char *word) {
    uint64_t n = text_len(word);
    if (at < 0 || (uint64_t)at + n >= input_len) return 0;
    for (uint64_t i = 0; i < n; i++)
        if (input[at + i] != word[i]) return 0;
    return input[at + n] == '"';
}

static volatile uint64_t spins;

static int32_t fail(const char *message) {
    output(message, text_len(message));
    return 1;
}

EXPORT("run") int32_t run(void) {
    input_len = input_length();
    if (input_len > MAX_INPUT) return fail("{\"error\": {\"case\": \"too-large\", \"message\": \"input\"}}");
    for (uint64_t i = 0; i < input_len; i++) input[i] = (char)input_load_u8(i);

    int64_t call = find_value("call");
    if (value_is(call, "upper")) {
        /* The input with the text's value upper-cased (ASCII): {"call": "upper", "text": "HELLO"}
         * is a valid answer of the form {"text": ...} plus a field. Rebuilt as {"text": "..."}. */
        int64_t at = find_value("text");
        if (at < 0) return fail("{\"error\": {\"case\": \"invalid\", \"message\": \"no text\"}}");
        static char out[MAX_INPUT + 16];
        const char *head = "{\"text\": \"";
        uint64_t n = 0;
        while (head[n]) { out[n] = head[n]; n++; }
        for (uint64_t i = (uint64_t)at; i < input_len && input[i] != '"'; i++) {
            char c = input[i];
            if (input[i] == '\\' && i + 1 < input_len) { out[n++] = c; c = input[++i]; }
            else if (c >= 'a' && c <= 'z') c = (char)(c - 'a' + 'A');
            out[n++] = c;
        }
        out[n++] = '"';
        out[n++] = '}';
        output(out, n);
        return 0;
    }
    if (value_is(call, "trap")) __builtin_trap();
    if (value_is(call, "spin")) for (;;) spins++;

    uint64_t (*function)(uint64_t) = 0;
    if (value_is(call, "log")) function = ionflux_log;
    else if (value_is(call, "config")) function = ionflux_config_get;
    else if (value_is(call, "pod-get")) function = ionflux_pod_get;
    else if (value_is(call, "pod-put")) function = ionflux_pod_put;
    else if (value_is(call, "bus")) function = ionflux_bus_publish;
    else if (value_is(call, "http")) function = ionflux_http_fetch;
    if (!function) return fail("{\"error\": {\"case\": \"invalid\", \"message\": \"unknown call\"}}");

    uint64_t request = to_block(input, input_len);
    uint64_t answer = function(request);
    kernel_free(request);
    output_set(answer, kernel_length(answer));
    return 0;
}
