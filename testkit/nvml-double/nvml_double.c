/*
 * nvml-double: a stand-in for libnvidia-ml.so.1 whose readings come from a script.
 *
 * It exports the NVML functions threadcycle's `host::gpu` and `host::telemetry` call through
 * nvml-wrapper 0.13 (nvml-wrapper-sys 0.10), with the same C signatures and structs as NVIDIA's
 * nvml.h, so the Rust side runs unchanged: `THREADCYCLE_NVML_LIB=<this .so>` loads it through
 * `Nvml::builder().lib_path(..)`. No NVIDIA code or header is used.
 *
 * The script is a text file of `key = value` lines (`#` starts a comment):
 *
 *   init    = ok | driver_not_loaded | no_permission | ...   nvmlInit_v2's result (default ok)
 *   driver  = 580.95.05                                       nvmlSystemGetDriverVersion
 *   count   = 2                                               devices (default: highest gpuN + 1)
 *   gpu0.name = NVIDIA GeForce RTX 5070 Ti
 *   gpu0.memory_total / memory_reserved / memory_used         bytes; `16GiB`, `512MiB` accepted
 *   gpu0.temperature   °C           gpu0.power   mW           gpu0.energy   mJ since driver load
 *   gpu0.utilization   %            gpu0.utilization_memory   %
 *   gpu0.clock_sm / clock_mem / clock_graphics                MHz (current)
 *   gpu0.max_clock_sm / max_clock_mem / max_clock_graphics    MHz (maximum)
 *   gpu0.bus_width     bits         gpu0.throttle   reason bit mask (0x4 = SW power cap)
 *   gpu0.processes / gpu0.graphics_processes = 4242:1GiB llama-server:900MiB
 *       running processes: `pid:bytes`, or `name:bytes` for every process in /proc whose
 *       comm is `name` (an engine the test started); bytes `n/a` = NVML_VALUE_NOT_AVAILABLE
 *
 * Every numeric value is a sequence, `v1, v2*3, v3`: each call of that function on that GPU
 * returns the next element (`v*n` = n times) and the last one repeats forever, so a
 * temperature can rise past a limit and fall back over successive reads. An element may be an
 * error name instead (`not_supported`, `no_permission`, `gpu_lost`, `unknown`, ...): that call
 * returns the error. A key not scripted returns NVML_ERROR_NOT_SUPPORTED, as a GeForce driver
 * does for what it does not support. `processes = no_permission` fails the process lists.
 *
 * Built with -DNVML_DOUBLE_OLD_DRIVER it lacks nvmlDeviceGetTotalEnergyConsumption and
 * nvmlDeviceGetMemoryBusWidth, as an older driver's library does: nvml-wrapper resolves every
 * symbol lazily and answers a missing one with FailedToLoadSymbol when it is called.
 *
 * Where the script is: `nvml-double.script` beside the loaded library if that file exists (so
 * tests in one process can each load their own copy), else the file named by
 * THREADCYCLE_NVML_DOUBLE. It is read at the first nvmlInit and the sequences start over at
 * every first nvmlInit after a full nvmlShutdown.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* nvmlReturn_t values (nvml.h). */
enum {
    NVML_SUCCESS = 0,
    NVML_ERROR_UNINITIALIZED = 1,
    NVML_ERROR_INVALID_ARGUMENT = 2,
    NVML_ERROR_NOT_SUPPORTED = 3,
    NVML_ERROR_NO_PERMISSION = 4,
    NVML_ERROR_NOT_FOUND = 6,
    NVML_ERROR_INSUFFICIENT_SIZE = 7,
    NVML_ERROR_DRIVER_NOT_LOADED = 9,
    NVML_ERROR_TIMEOUT = 10,
    NVML_ERROR_GPU_IS_LOST = 15,
    NVML_ERROR_ARGUMENT_VERSION_MISMATCH = 25,
    NVML_ERROR_UNKNOWN = 999,
};

#define NVML_VALUE_NOT_AVAILABLE ULLONG_MAX

typedef int nvmlReturn_t;

/* Structs with nvml.h's layout. */
typedef struct {
    unsigned long long total, free, used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;

typedef struct {
    unsigned int gpu, memory;
} nvmlUtilization_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId, computeInstanceId;
} nvmlProcessInfo_t;

#define MAX_GPUS 8
#define MAX_SEQ 256
#define MAX_PROCS 32

/* One scripted sequence: values or error codes, and where the next read is. */
typedef struct {
    int set;
    int n;
    unsigned long long val[MAX_SEQ];
    int err[MAX_SEQ];
    int cursor;
} seq_t;

typedef struct {
    char name[96];   /* a process name to match in /proc, or "" */
    unsigned int pid;
    unsigned long long bytes;
} proc_t;

typedef struct {
    int err;         /* non-zero: the list call fails with this */
    int set;
    int n;
    proc_t p[MAX_PROCS];
} procs_t;

enum {
    F_MEM_TOTAL, F_MEM_RESERVED, F_MEM_USED, F_TEMP, F_POWER, F_ENERGY, F_UTIL, F_UTIL_MEM,
    F_CLOCK_GRAPHICS, F_CLOCK_SM, F_CLOCK_MEM, F_MAX_GRAPHICS, F_MAX_SM, F_MAX_MEM,
    F_BUS_WIDTH, F_THROTTLE, F_COUNT
};

static const char *FIELD_NAMES[F_COUNT] = {
    "memory_total", "memory_reserved", "memory_used", "temperature", "power", "energy",
    "utilization", "utilization_memory", "clock_graphics", "clock_sm", "clock_mem",
    "max_clock_graphics", "max_clock_sm", "max_clock_mem", "bus_width", "throttle",
};

typedef struct {
    int index;
    char name[96];
    seq_t f[F_COUNT];
    procs_t compute, graphics;
} device_t;

static pthread_mutex_t LOCK = PTHREAD_MUTEX_INITIALIZER;
static int INIT_COUNT = 0;
static int INIT_RESULT = NVML_SUCCESS;
static char DRIVER[80] = "";
static int COUNT = 0;
static device_t DEVICES[MAX_GPUS];

static const struct {
    const char *name;
    int code;
} ERRORS[] = {
    {"ok", NVML_SUCCESS},
    {"uninitialized", NVML_ERROR_UNINITIALIZED},
    {"invalid_argument", NVML_ERROR_INVALID_ARGUMENT},
    {"not_supported", NVML_ERROR_NOT_SUPPORTED},
    {"no_permission", NVML_ERROR_NO_PERMISSION},
    {"not_found", NVML_ERROR_NOT_FOUND},
    {"driver_not_loaded", NVML_ERROR_DRIVER_NOT_LOADED},
    {"timeout", NVML_ERROR_TIMEOUT},
    {"gpu_lost", NVML_ERROR_GPU_IS_LOST},
    {"unknown", NVML_ERROR_UNKNOWN},
};

static int error_code(const char *s) {
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++) {
        if (strcmp(s, ERRORS[i].name) == 0) return ERRORS[i].code;
    }
    return -1;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    char *e = s + strlen(s);
    while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
    return s;
}

/* A number with an optional KiB/MiB/GiB suffix (hex allowed without one); 0 on success. */
static int parse_number(const char *s, unsigned long long *out) {
    if (strcmp(s, "n/a") == 0) {
        *out = NVML_VALUE_NOT_AVAILABLE;
        return 0;
    }
    char *end;
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        *out = strtoull(s, &end, 16);
        return *trim(end) ? -1 : 0;
    }
    double v = strtod(s, &end);
    if (end == s) return -1;
    const char *unit = trim(end);
    double scale = 1.0;
    if (strcmp(unit, "KiB") == 0) scale = 1024.0;
    else if (strcmp(unit, "MiB") == 0) scale = 1024.0 * 1024.0;
    else if (strcmp(unit, "GiB") == 0) scale = 1024.0 * 1024.0 * 1024.0;
    else if (*unit) return -1;
    *out = (unsigned long long)(v * scale + 0.5);
    return 0;
}

static void complain(const char *what, const char *text) {
    fprintf(stderr, "nvml-double: %s: `%s`\n", what, text);
}

/* `v1, v2*3, not_supported` into `q`. */
static void parse_seq(seq_t *q, char *text) {
    memset(q, 0, sizeof *q);
    q->set = 1;
    for (char *save = NULL, *item = strtok_r(text, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        item = trim(item);
        unsigned long times = 1;
        char *star = strrchr(item, '*');
        if (star) {
            *star = '\0';
            times = strtoul(star + 1, NULL, 10);
            item = trim(item);
        }
        int code = error_code(item);
        unsigned long long v = 0;
        if (code < 0 && parse_number(item, &v) != 0) {
            complain("not a number or an error name", item);
            code = NVML_ERROR_UNKNOWN;
        }
        for (unsigned long t = 0; t < times && q->n < MAX_SEQ; t++) {
            q->val[q->n] = v;
            q->err[q->n] = code < 0 ? NVML_SUCCESS : code;
            q->n++;
        }
    }
}

/* `4242:1GiB llama-server:900MiB` or an error name. */
static void parse_procs(procs_t *l, char *text) {
    memset(l, 0, sizeof *l);
    l->set = 1;
    int code = error_code(text);
    if (code > 0) {
        l->err = code;
        return;
    }
    for (char *save = NULL, *item = strtok_r(text, " \t", &save); item; item = strtok_r(NULL, " \t", &save)) {
        char *colon = strrchr(item, ':');
        if (!colon || l->n >= MAX_PROCS) {
            complain("a process is `pid:bytes` or `name:bytes`", item);
            continue;
        }
        *colon = '\0';
        proc_t *p = &l->p[l->n];
        if (parse_number(colon + 1, &p->bytes) != 0) {
            complain("not a size", colon + 1);
            continue;
        }
        char *end;
        unsigned long pid = strtoul(item, &end, 10);
        if (*end == '\0' && end != item) {
            p->pid = (unsigned int)pid;
        } else {
            snprintf(p->name, sizeof p->name, "%s", item);
        }
        l->n++;
    }
}

/* The script's path: beside this library, else $THREADCYCLE_NVML_DOUBLE. */
static int script_path(char *out, size_t len) {
    Dl_info info;
    if (dladdr((void *)&script_path, &info) && info.dli_fname) {
        const char *slash = strrchr(info.dli_fname, '/');
        if (slash) {
            snprintf(out, len, "%.*s/nvml-double.script", (int)(slash - info.dli_fname), info.dli_fname);
            FILE *f = fopen(out, "r");
            if (f) {
                fclose(f);
                return 0;
            }
        }
    }
    const char *env = getenv("THREADCYCLE_NVML_DOUBLE");
    if (env && *env) {
        snprintf(out, len, "%s", env);
        return 0;
    }
    return -1;
}

static int load_script(void) {
    memset(DEVICES, 0, sizeof DEVICES);
    INIT_RESULT = NVML_SUCCESS;
    DRIVER[0] = '\0';
    COUNT = -1;
    char path[4096];
    if (script_path(path, sizeof path) != 0) {
        fprintf(stderr, "nvml-double: no script: set THREADCYCLE_NVML_DOUBLE or put nvml-double.script beside the library\n");
        return NVML_ERROR_UNKNOWN;
    }
    FILE *f = fopen(path, "r");
    if (!f) {
        complain("cannot read the script", path);
        return NVML_ERROR_UNKNOWN;
    }
    int highest = -1;
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        char *hash = strchr(line, '#');
        if (hash) *hash = '\0';
        char *eq = strchr(line, '=');
        if (!eq) {
            if (*trim(line)) complain("not `key = value`", trim(line));
            continue;
        }
        *eq = '\0';
        char *key = trim(line), *value = trim(eq + 1);
        if (strcmp(key, "init") == 0) {
            int code = error_code(value);
            INIT_RESULT = code < 0 ? NVML_ERROR_UNKNOWN : code;
        } else if (strcmp(key, "driver") == 0) {
            snprintf(DRIVER, sizeof DRIVER, "%s", value);
        } else if (strcmp(key, "count") == 0) {
            COUNT = atoi(value);
        } else if (strncmp(key, "gpu", 3) == 0 && isdigit((unsigned char)key[3])) {
            char *dot;
            long i = strtol(key + 3, &dot, 10);
            if (*dot != '.' || i < 0 || i >= MAX_GPUS) {
                complain("unknown key", key);
                continue;
            }
            device_t *d = &DEVICES[i];
            d->index = (int)i;
            highest = i > highest ? (int)i : highest;
            const char *field = dot + 1;
            if (strcmp(field, "name") == 0) {
                snprintf(d->name, sizeof d->name, "%s", value);
            } else if (strcmp(field, "processes") == 0) {
                parse_procs(&d->compute, value);
            } else if (strcmp(field, "graphics_processes") == 0) {
                parse_procs(&d->graphics, value);
            } else {
                int found = 0;
                for (int k = 0; k < F_COUNT; k++) {
                    if (strcmp(field, FIELD_NAMES[k]) == 0) {
                        parse_seq(&d->f[k], value);
                        found = 1;
                    }
                }
                if (!found) complain("unknown key", key);
            }
        } else {
            complain("unknown key", key);
        }
    }
    fclose(f);
    if (COUNT < 0) COUNT = highest + 1;
    if (COUNT > MAX_GPUS) COUNT = MAX_GPUS;
    for (int i = 0; i < MAX_GPUS; i++) DEVICES[i].index = i;
    return NVML_SUCCESS;
}

/* The next element of a sequence; NOT_SUPPORTED when the script does not set it. */
static nvmlReturn_t next(seq_t *q, unsigned long long *out) {
    if (!q->set || q->n == 0) return NVML_ERROR_NOT_SUPPORTED;
    int i = q->cursor;
    if (q->cursor < q->n - 1) q->cursor++;
    if (q->err[i] != NVML_SUCCESS) return q->err[i];
    *out = q->val[i];
    return NVML_SUCCESS;
}

/* Checks the handle and takes the lock; every device call starts here. */
static device_t *enter(void *device, nvmlReturn_t *rc) {
    pthread_mutex_lock(&LOCK);
    if (INIT_COUNT == 0) {
        *rc = NVML_ERROR_UNINITIALIZED;
        return NULL;
    }
    device_t *d = device;
    if (d < DEVICES || d >= DEVICES + COUNT) {
        *rc = NVML_ERROR_INVALID_ARGUMENT;
        return NULL;
    }
    *rc = NVML_SUCCESS;
    return d;
}

static nvmlReturn_t leave(nvmlReturn_t rc) {
    pthread_mutex_unlock(&LOCK);
    return rc;
}

/* One scripted value into an unsigned int. */
static nvmlReturn_t read_uint(void *device, int field, unsigned int *out) {
    nvmlReturn_t rc;
    device_t *d = enter(device, &rc);
    if (!d) return leave(rc);
    if (!out) return leave(NVML_ERROR_INVALID_ARGUMENT);
    unsigned long long v = 0;
    rc = next(&d->f[field], &v);
    if (rc == NVML_SUCCESS) *out = (unsigned int)v;
    return leave(rc);
}

/* ------------------------------------------------------------------------------------------ */
/* The NVML entry points.                                                                     */
/* ------------------------------------------------------------------------------------------ */

nvmlReturn_t nvmlInit_v2(void) {
    pthread_mutex_lock(&LOCK);
    nvmlReturn_t rc = NVML_SUCCESS;
    if (INIT_COUNT == 0) {
        rc = load_script();
        if (rc == NVML_SUCCESS) rc = INIT_RESULT;
    }
    if (rc == NVML_SUCCESS) INIT_COUNT++;
    return leave(rc);
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    return nvmlInit_v2();
}

nvmlReturn_t nvmlInit(void) { return nvmlInit_v2(); }

nvmlReturn_t nvmlShutdown(void) {
    pthread_mutex_lock(&LOCK);
    if (INIT_COUNT == 0) return leave(NVML_ERROR_UNINITIALIZED);
    INIT_COUNT--;
    return leave(NVML_SUCCESS);
}

const char *nvmlErrorString(nvmlReturn_t result) {
    for (size_t i = 0; i < sizeof ERRORS / sizeof ERRORS[0]; i++) {
        if (ERRORS[i].code == result) return ERRORS[i].name;
    }
    return "unknown error";
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    pthread_mutex_lock(&LOCK);
    if (INIT_COUNT == 0) return leave(NVML_ERROR_UNINITIALIZED);
    if (!version) return leave(NVML_ERROR_INVALID_ARGUMENT);
    if (!DRIVER[0]) return leave(NVML_ERROR_NOT_SUPPORTED);
    if (strlen(DRIVER) + 1 > length) return leave(NVML_ERROR_INSUFFICIENT_SIZE);
    memcpy(version, DRIVER, strlen(DRIVER) + 1);
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    pthread_mutex_lock(&LOCK);
    if (INIT_COUNT == 0) return leave(NVML_ERROR_UNINITIALIZED);
    if (!count) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *count = (unsigned int)COUNT;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetCount(unsigned int *count) { return nvmlDeviceGetCount_v2(count); }

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, void **device) {
    pthread_mutex_lock(&LOCK);
    if (INIT_COUNT == 0) return leave(NVML_ERROR_UNINITIALIZED);
    if (!device || index >= (unsigned int)COUNT) return leave(NVML_ERROR_INVALID_ARGUMENT);
    *device = &DEVICES[index];
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetName(void *device, char *name, unsigned int length) {
    nvmlReturn_t rc;
    device_t *d = enter(device, &rc);
    if (!d) return leave(rc);
    if (!name) return leave(NVML_ERROR_INVALID_ARGUMENT);
    const char *n = d->name[0] ? d->name : "NVML double GPU";
    if (strlen(n) + 1 > length) return leave(NVML_ERROR_INSUFFICIENT_SIZE);
    memcpy(name, n, strlen(n) + 1);
    return leave(NVML_SUCCESS);
}

/* total, reserved and used from the script; free is what is left. */
static nvmlReturn_t memory(device_t *d, unsigned long long *total, unsigned long long *reserved,
                           unsigned long long *used) {
    *reserved = 0;
    *used = 0;
    nvmlReturn_t rc = next(&d->f[F_MEM_TOTAL], total);
    if (rc != NVML_SUCCESS) return rc;
    if (d->f[F_MEM_RESERVED].set && (rc = next(&d->f[F_MEM_RESERVED], reserved)) != NVML_SUCCESS) return rc;
    if (d->f[F_MEM_USED].set && (rc = next(&d->f[F_MEM_USED], used)) != NVML_SUCCESS) return rc;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(void *device, nvmlMemory_v2_t *memory_v2) {
    nvmlReturn_t rc;
    device_t *d = enter(device, &rc);
    if (!d) return leave(rc);
    if (!memory_v2) return leave(NVML_ERROR_INVALID_ARGUMENT);
    /* nvml.h: nvmlMemory_v2 = NVML_STRUCT_VERSION(Memory, 2) = sizeof | 2 << 24. */
    if (memory_v2->version != (unsigned int)(sizeof(nvmlMemory_v2_t) | (2u << 24))) {
        return leave(NVML_ERROR_ARGUMENT_VERSION_MISMATCH);
    }
    unsigned long long total, reserved, used;
    rc = memory(d, &total, &reserved, &used);
    if (rc != NVML_SUCCESS) return leave(rc);
    memory_v2->total = total;
    memory_v2->reserved = reserved;
    memory_v2->used = used;
    memory_v2->free = total > reserved + used ? total - reserved - used : 0;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(void *device, nvmlMemory_t *mem) {
    nvmlReturn_t rc;
    device_t *d = enter(device, &rc);
    if (!d) return leave(rc);
    if (!mem) return leave(NVML_ERROR_INVALID_ARGUMENT);
    unsigned long long total, reserved, used;
    rc = memory(d, &total, &reserved, &used);
    if (rc != NVML_SUCCESS) return leave(rc);
    /* v1 counts the reserved memory as used (nvml.h). */
    mem->total = total;
    mem->used = used + reserved;
    mem->free = total > reserved + used ? total - reserved - used : 0;
    return leave(NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetTemperature(void *device, int sensor, unsigned int *temp) {
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT; /* NVML_TEMPERATURE_GPU */
    return read_uint(device, F_TEMP, temp);
}

nvmlReturn_t nvmlDeviceGetPowerUsage(void *device, unsigned int *power) { return read_uint(device, F_POWER, power); }

#ifndef NVML_DOUBLE_OLD_DRIVER
nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(void *device, unsigned long long *energy) {
    nvmlReturn_t rc;
    device_t *d = enter(device, &rc);
    if (!d) return leave(rc);
    if (!energy) return leave(NVML_ERROR_INVALID_ARGUMENT);
    return leave(next(&d->f[F_ENERGY], energy));
}
#endif

nvmlReturn_t nvmlDeviceGetUtilizationRates(void *device, nvmlUtilization_t *util) {
    nvmlReturn_t rc;
    device_t *d = enter(device, &rc);
    if (!d) return leave(rc);
    if (!util) return leave(NVML_ERROR_INVALID_ARGUMENT);
    unsigned long long gpu = 0, mem = 0;
    rc = next(&d->f[F_UTIL], &gpu);
    if (rc != NVML_SUCCESS) return leave(rc);
    if (d->f[F_UTIL_MEM].set && (rc = next(&d->f[F_UTIL_MEM], &mem)) != NVML_SUCCESS) return leave(rc);
    util->gpu = (unsigned int)gpu;
    util->memory = (unsigned int)mem;
    return leave(NVML_SUCCESS);
}

/* nvmlClockType_t: 0 graphics, 1 SM, 2 memory. */
static int clock_field(int type, int max) {
    switch (type) {
    case 0: return max ? F_MAX_GRAPHICS : F_CLOCK_GRAPHICS;
    case 1: return max ? F_MAX_SM : F_CLOCK_SM;
    case 2: return max ? F_MAX_MEM : F_CLOCK_MEM;
    default: return -1;
    }
}

nvmlReturn_t nvmlDeviceGetClockInfo(void *device, int type, unsigned int *clock) {
    int f = clock_field(type, 0);
    return f < 0 ? NVML_ERROR_NOT_SUPPORTED : read_uint(device, f, clock);
}

nvmlReturn_t nvmlDeviceGetMaxClockInfo(void *device, int type, unsigned int *clock) {
    int f = clock_field(type, 1);
    return f < 0 ? NVML_ERROR_NOT_SUPPORTED : read_uint(device, f, clock);
}

#ifndef NVML_DOUBLE_OLD_DRIVER
nvmlReturn_t nvmlDeviceGetMemoryBusWidth(void *device, unsigned int *width) {
    return read_uint(device, F_BUS_WIDTH, width);
}
#endif

nvmlReturn_t nvmlDeviceGetCurrentClocksThrottleReasons(void *device, unsigned long long *reasons) {
    nvmlReturn_t rc;
    device_t *d = enter(device, &rc);
    if (!d) return leave(rc);
    if (!reasons) return leave(NVML_ERROR_INVALID_ARGUMENT);
    return leave(next(&d->f[F_THROTTLE], reasons));
}

nvmlReturn_t nvmlDeviceGetCurrentClocksEventReasons(void *device, unsigned long long *reasons) {
    return nvmlDeviceGetCurrentClocksThrottleReasons(device, reasons);
}

/* The scripted processes, name entries expanded to every matching process in /proc. */
static unsigned int list_procs(const procs_t *l, nvmlProcessInfo_t *out, unsigned int cap) {
    unsigned int n = 0;
    for (int i = 0; i < l->n; i++) {
        const proc_t *p = &l->p[i];
        if (!p->name[0]) {
            if (n < cap && out) out[n] = (nvmlProcessInfo_t){p->pid, p->bytes, UINT_MAX, UINT_MAX};
            n++;
            continue;
        }
        DIR *proc = opendir("/proc");
        if (!proc) continue;
        for (struct dirent *e; (e = readdir(proc));) {
            char *end;
            unsigned long pid = strtoul(e->d_name, &end, 10);
            if (*end || end == e->d_name) continue;
            char path[64], comm[256] = "";
            snprintf(path, sizeof path, "/proc/%lu/comm", pid);
            FILE *f = fopen(path, "r");
            if (!f) continue;
            if (!fgets(comm, sizeof comm, f)) comm[0] = '\0';
            fclose(f);
            comm[strcspn(comm, "\n")] = '\0';
            if (strcmp(comm, p->name) != 0) continue;
            if (n < cap && out) out[n] = (nvmlProcessInfo_t){(unsigned int)pid, p->bytes, UINT_MAX, UINT_MAX};
            n++;
        }
        closedir(proc);
    }
    return n;
}

/* nvml.h's contract: *count in = room in infos; out = processes. Too little room (or a count
 * query with infos NULL and *count 0) gives INSUFFICIENT_SIZE with *count set; none: SUCCESS. */
static nvmlReturn_t running(void *device, int graphics, unsigned int *count, nvmlProcessInfo_t *infos) {
    nvmlReturn_t rc;
    device_t *d = enter(device, &rc);
    if (!d) return leave(rc);
    if (!count) return leave(NVML_ERROR_INVALID_ARGUMENT);
    const procs_t *l = graphics ? &d->graphics : &d->compute;
    if (l->err) return leave(l->err);
    unsigned int cap = infos ? *count : 0;
    unsigned int n = list_procs(l, infos, cap);
    *count = n;
    return leave(n > cap ? NVML_ERROR_INSUFFICIENT_SIZE : NVML_SUCCESS);
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return running(device, 0, count, infos);
}

nvmlReturn_t nvmlDeviceGetGraphicsRunningProcesses_v3(void *device, unsigned int *count, nvmlProcessInfo_t *infos) {
    return running(device, 1, count, infos);
}
