/* ntpguard.logs._cut: the fast path of LineParser.packet_blocks() in C.
 *
 * Why C: the per-line field cutting in Python costs ~1.3 us a line, which caps `ntpguard
 * detect` at ~0.4-0.6M lines/s on logs made of netfilter lines (issue 4 asks for 1M on two
 * cores). This file does the cutting, and the plain address forms (RFC 5952, dotted quads);
 * every decision that needs state (year inference, time zones, the stamp caches) and the rare
 * address forms stay in Python and are reached through the callables passed in, and every line
 * this code does not take whole goes to the full parser (`slow`). So it can only be faster,
 * never different: tests/test_logs.py checks it against the full parser line by line.
 *
 * Built against the limited API (abi3) so one build loads on every Python 3 from 3.9 on; if it
 * is missing or fails to load, parse.py uses its pure-Python copy of the same path.
 */
#ifndef Py_LIMITED_API
#define Py_LIMITED_API 0x03090000
#endif
#define PY_SSIZE_T_CLEAN
#define _GNU_SOURCE
#include <Python.h>
#include <arpa/inet.h>
#include <stdint.h>
#include <string.h>

static const double POW10[16] = {1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8,
                                 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15};

/* Index of needle in line[from:to), or -1 (bytes.find with bounds). */
static Py_ssize_t find(const char *line, Py_ssize_t len, const char *needle, Py_ssize_t nlen,
                       Py_ssize_t from, Py_ssize_t to) {
    if (to > len) to = len;
    if (from < 0 || from > to || to - from < nlen) return -1;
    const char *hit = nlen == 1 ? memchr(line + from, needle[0], (size_t)(to - from))
                                : memmem(line + from, (size_t)(to - from), needle, (size_t)nlen);
    return hit ? (Py_ssize_t)(hit - line) : -1;
}

/* bytes.find() and bytes.rfind() with bounds, for a needle whose only '=' is its last byte (" SRC=", " OUT=", "IN="):
 * every occurrence ends at an '=', and a netfilter line has one every ~25 bytes, so hopping
 * from '=' to '=' with memchr costs a fifth of memmem's or a byte loop's scan. */
static inline __attribute__((always_inline)) Py_ssize_t
find_eq(const char *line, Py_ssize_t len, const char *needle, Py_ssize_t nlen, Py_ssize_t from,
        Py_ssize_t to) { /* inlined: with nlen a constant, the memcmp is one compare */
    if (to > len) to = len;
    if (from < 0) from = 0;
    for (Py_ssize_t q = from + nlen - 1; q < to;) {
        const char *hit = memchr(line + q, '=', (size_t)(to - q));
        if (hit == NULL) return -1;
        q = hit - line;
        if (memcmp(line + q - (nlen - 1), needle, (size_t)(nlen - 1)) == 0) return q - (nlen - 1);
        q++;
    }
    return -1;
}

static inline __attribute__((always_inline)) Py_ssize_t
rfind_eq(const char *line, Py_ssize_t len, const char *needle, Py_ssize_t nlen, Py_ssize_t from,
         Py_ssize_t to) {
    Py_ssize_t last = -1;
    for (;;) {
        Py_ssize_t i = find_eq(line, len, needle, nlen, from, to);
        if (i < 0) return last;
        last = i;
        from = i + 1;
    }
}

/* A hash of a short key, 8 bytes a step (a byte-at-a-time FNV over a 39-character IPv6
 * address is a chain of 39 multiplies: ~150 cycles, twice a line). */
static uint64_t hash_bytes(const void *key, size_t n) {
    const unsigned char *p = key;
    uint64_t h = (uint64_t)n * 0x9e3779b97f4a7c15u;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdu;
        h ^= h >> 32;
    }
    if (n) {
        uint64_t w = 0;
        memcpy(&w, p, n);
        h = (h ^ w) * 0xc4ceb9fe1a85ec53u;
    }
    return h ^ (h >> 29);
}

/* "SPT=123" exactly as f"SPT={n}" prints a port 0..65535 (no sign, no leading zero). */
static long port(const char *p, Py_ssize_t n, const char *tag) {
    if (n < 5 || n > 9 || memcmp(p, tag, 4) != 0) return -1;
    p += 4;
    n -= 4;
    if (n > 1 && p[0] == '0') return -1;
    long v = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') return -1;
        v = v * 10 + (p[i] - '0');
    }
    return v <= 65535 ? v : -1;
}

/* What one call remembers while it walks its block. Consecutive lines mostly share the
 * minute of their stamp and often their addresses: remembering them saves a call into Python
 * per line. Stamps are remembered per minute (what the Python caches also key on); any call
 * into the full parser forgets them, because it may move the year on. Keys are copies, not
 * pointers into lines, so the callables may do anything. */
#define ADDR_SLOTS 1024
typedef struct {
    char text[48];
    Py_ssize_t len; /* 0: empty */
    PyObject *value;
} AddrSlot;

typedef struct {
    char text[64];
    Py_ssize_t len; /* 0: empty */
    double t;       /* seconds at hh:mm:00 of that minute */
} Minute;

#define IFACE_PAIRS 8
typedef struct {
    char text[64];
    Py_ssize_t len;
    PyObject *in, *out; /* owned */
} IfacePair;

#define MAX_PROTOS 32
typedef struct {
    char name[16];
    Py_ssize_t len;
    PyObject *value; /* borrowed from protos: the str */
    int ported;
} Proto;

typedef struct {
    PyObject *canonical, *sys_time, *iso_time, *slow;
    int syslog_ok, iso_ok;
    Minute sys_minute, iso_minute;
    AddrSlot *slots;
    Proto protos[MAX_PROTOS];
    int n_protos;
    double last_t;
    PyObject *last_time; /* owned */
    /* Interface texts ("eth1 OUT=eth0") seen in this block and their (iface_in, iface_out)
     * strs: a log has a handful, and a gateway's alternate line by line (out to the
     * internet, in from it), so one remembered text made two strs a line. */
    IfacePair pairs[IFACE_PAIRS];
    int n_pairs, next_pair;
    /* The sieve (see sieve()); hold is NULL when it is off. */
    struct Hold *hold;
    double window;
    long trigger_port;
    int any_port, aggregate, releasing;
} Ctx;

static PyObject *PORTS[65536]; /* port numbers as ints, made once */

static PyObject *port_object(long v) {
    if (PORTS[v] == NULL) PORTS[v] = PyLong_FromLong(v);
    Py_XINCREF(PORTS[v]);
    return PORTS[v];
}

/* Character classes of address text: 0-15 a hex digit's value, COLON, DOT, else OTHER. A
 * table, not comparisons: random hex digits make "is it <= '9'" a coin flip for the branch
 * predictor (that alone cost ~0.3 us per IPv6 address). */
enum { COLON = 16, DOT = 17, OTHER = 18 };
static unsigned char CLASS[256];

static void init_classes(void) {
    memset(CLASS, OTHER, sizeof CLASS);
    for (int i = 0; i < 10; i++) CLASS['0' + i] = (unsigned char)i;
    for (int i = 0; i < 6; i++) CLASS['a' + i] = CLASS['A' + i] = (unsigned char)(10 + i);
    CLASS[':'] = COLON;
    CLASS['.'] = DOT;
}

/* IPv6 text of hex groups and at most one "::" → 16 bytes, by hand: 1 done, 0 for inet_pton
 * (anything unusual: 5-digit groups, ":::", a lone ':' at an end, eight groups and a "::"),
 * -1 if a character is neither a hex digit nor a colon. inet_pton costs ~4x this, and a
 * radiation log has two new addresses a line. */
static int ipv6_groups(const char *text, Py_ssize_t len, unsigned char out[16]) {
    if (len == 39) { /* as the kernel prints it: eight groups of four digits */
        unsigned bad = 0;
        for (int g = 0; g < 8; g++) {
            const unsigned char *t = (const unsigned char *)text + 5 * g;
            unsigned a = CLASS[t[0]], b = CLASS[t[1]], c = CLASS[t[2]], d = CLASS[t[3]];
            bad |= a | b | c | d;
            if (g < 7) bad |= (unsigned)(t[4] != ':') << 4;
            out[2 * g] = (unsigned char)(a << 4 | b);
            out[2 * g + 1] = (unsigned char)(c << 4 | d);
        }
        if (bad < 16) return 1;
    }
    unsigned w[8];
    int n = 0, gap = -1, unusual = 0;
    Py_ssize_t i = 0;
    if (len >= 2 && text[0] == ':' && text[1] == ':') {
        gap = 0;
        i = 2;
    }
    while (i < len) {
        unsigned v = 0, c;
        int digits = 0;
        for (; i < len && (c = CLASS[(unsigned char)text[i]]) < COLON; i++) {
            v = v << 4 | c;
            digits++;
        }
        if (i < len && c != COLON) return -1;
        if (digits == 0 || digits > 4 || n == 8) {
            unusual = 1;
            break;
        }
        w[n++] = v;
        if (i == len) break;
        i++; /* the ':' */
        if (i < len && text[i] == ':') {
            if (gap >= 0) {
                unusual = 1;
                break;
            }
            gap = n;
            i++;
        } else if (i == len) {
            unusual = 1;
            break;
        }
    }
    if (unusual) { /* the rest must still be hex digits and colons only */
        for (; i < len; i++)
            if (CLASS[(unsigned char)text[i]] > COLON) return -1;
        return 0;
    }
    if (gap < 0 ? n != 8 : n > 7) return 0;
    int fill = 8 - n, k = 0;
    for (int g = 0; g < 8; g++) {
        unsigned v;
        if (gap >= 0 && g >= gap && g < gap + fill)
            v = 0;
        else
            v = w[k++];
        out[2 * g] = (unsigned char)(v >> 8);
        out[2 * g + 1] = (unsigned char)v;
    }
    return 1;
}

/* An address text in binary, where canonical() prints it here: 4 (a strict dotted quad: 1-3
 * digits each, no leading zero, at most 255, ipaddress's rules) or 16 (IPv6 of hex digits and
 * colons); 0 if it is not an address (what Python finds too: its inet_pton is this same libc
 * call); -1 for "ask Python" (IPv4-mapped and -compatible forms, scope ids, embedded dots,
 * anything else). */
static int parse_plain(const char *text, Py_ssize_t len, unsigned char a[16]) {
    if (len <= 0 || len > 45) return -1;
    if (memchr(text, ':', (size_t)len) == NULL) {
        int parts = 0, digits = 0, value = 0;
        for (Py_ssize_t i = 0; i <= len; i++) {
            if (i == len || text[i] == '.') {
                if (digits == 0 || value > 255 || parts == 4) return -1;
                a[parts++] = (unsigned char)value;
                digits = value = 0;
            } else if (text[i] >= '0' && text[i] <= '9') {
                if (digits == 1 && value == 0) return -1;
                if (++digits > 3) return -1;
                value = value * 10 + (text[i] - '0');
            } else {
                return -1;
            }
        }
        return parts == 4 ? 4 : -1;
    }
    int got = ipv6_groups(text, len, a);
    if (got < 0) return -1; /* a dot (embedded IPv4) or anything else: Python's */
    if (got == 0) {
        char z[48];
        memcpy(z, text, (size_t)len);
        z[len] = 0;
        if (inet_pton(AF_INET6, z, a) != 1) return 0;
    }
    int zero = 1;
    for (int i = 0; i < 10; i++) zero &= a[i] == 0;
    if (zero && ((a[10] == 0 && a[11] == 0) || (a[10] == 0xff && a[11] == 0xff)))
        return -1; /* printed in dotted form by some libcs and Pythons */
    return 16;
}

/* What ipaddress prints for an address parse_plain() took: the dotted quad as it was written
 * (parse_plain takes only the form ipaddress prints), or RFC 5952 (the longest run of two or
 * more zero groups, the first of equals, as "::"; lowercase hex without leading zeros).
 * Returns the length written to out. */
static int format_plain(const char *text, Py_ssize_t len, const unsigned char a[16], int na,
                        char out[48]) {
    if (na == 4) {
        memcpy(out, text, (size_t)len);
        return (int)len;
    }
    unsigned w[8];
    for (int i = 0; i < 8; i++) w[i] = (unsigned)a[2 * i] << 8 | a[2 * i + 1];
    int best = -1, best_len = 0;
    for (int i = 0; i < 8;) {
        if (w[i] != 0) {
            i++;
            continue;
        }
        int j = i;
        while (j < 8 && w[j] == 0) j++;
        if (j - i > best_len) {
            best = i;
            best_len = j - i;
        }
        i = j;
    }
    if (best_len < 2) best = -1;
    int n = 0;
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            out[n++] = ':';
            if (i == 0) out[n++] = ':';
            i += best_len - 1;
            continue;
        }
        static const char hex[] = "0123456789abcdef";
        int started = 0;
        for (int shift = 12; shift >= 0; shift -= 4) {
            unsigned d = (w[i] >> shift) & 15;
            if (d || started || shift == 0) {
                out[n++] = hex[d];
                started = 1;
            }
        }
        if (i < 7) out[n++] = ':';
    }
    return n;
}

/* The canonical text of an address (format_plain of parse_plain): its length, 0 if it is not
 * an address, -1 for "ask Python". */
static int canonical(const char *text, Py_ssize_t len, char out[48]) {
    unsigned char a[16];
    int na = parse_plain(text, len, a);
    return na <= 0 ? na : format_plain(text, len, a, na, out);
}

/* An address text → its canonical str: this call's cache, then canonical() here, then the
 * Python one. A new reference, NULL with an exception set, or
 * Py_None if it is not an address. */
static PyObject *address(Ctx *x, const char *text, Py_ssize_t len) {
    AddrSlot *slot = NULL;
    if (len > 0 && len <= (Py_ssize_t)sizeof x->slots[0].text) {
        slot = &x->slots[hash_bytes(text, (size_t)len) % ADDR_SLOTS];
        if (slot->len == len && memcmp(slot->text, text, (size_t)len) == 0) {
            Py_INCREF(slot->value);
            return slot->value;
        }
    }
    char buf[48];
    int n = canonical(text, len, buf);
    PyObject *got;
    if (n == 0) Py_RETURN_NONE;
    if (n > 0) {
        got = PyUnicode_FromStringAndSize(buf, n);
        if (got == NULL) return NULL;
    } else {
        PyObject *raw = PyBytes_FromStringAndSize(text, len);
        if (raw == NULL) return NULL;
        got = PyObject_CallFunctionObjArgs(x->canonical, raw, NULL);
        Py_DECREF(raw);
        if (got == NULL) return NULL;
        if (!PyUnicode_Check(got) || PyUnicode_GetLength(got) == 0) {
            Py_DECREF(got);
            Py_RETURN_NONE;
        }
    }
    if (slot != NULL) {
        Py_XDECREF(slot->value);
        Py_INCREF(got);
        slot->value = got;
        slot->len = len;
        memcpy(slot->text, text, (size_t)len);
    }
    return got;
}

/* Two ASCII digits 00..60 (what the Python side accepts as seconds), else -1. */
static int seconds(const char *p) {
    if (p[0] < '0' || p[0] > '9' || p[1] < '0' || p[1] > '9') return -1;
    int v = (p[0] - '0') * 10 + (p[1] - '0');
    return v <= 60 ? v : -1;
}

/* The time of a stamp key whose minute is key[:mlen] + key[mlen+3:] and whose seconds are
 * key[mlen+1:mlen+3] (after a ':'): from the remembered minute, else from convert(key) (float
 * or None). 0 ok, 1 not a time, -1 error. */
static int stamp(Minute *m, const char *key, Py_ssize_t len, Py_ssize_t mlen,
                 PyObject *convert, double *t) {
    int ss = key[mlen] == ':' ? seconds(key + mlen + 1) : -1;
    Py_ssize_t rest = len - mlen - 3;
    if (ss >= 0 && m->len == mlen + rest && memcmp(m->text, key, (size_t)mlen) == 0 &&
        memcmp(m->text + mlen, key + mlen + 3, (size_t)rest) == 0) {
        *t = m->t + ss;
        return 0;
    }
    PyObject *raw = PyBytes_FromStringAndSize(key, len);
    if (raw == NULL) return -1;
    PyObject *got = PyObject_CallFunctionObjArgs(convert, raw, NULL);
    Py_DECREF(raw);
    if (got == NULL) return -1;
    if (got == Py_None) {
        Py_DECREF(got);
        return 1;
    }
    double v = PyFloat_AsDouble(got);
    Py_DECREF(got);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    if (ss >= 0 && mlen + rest <= (Py_ssize_t)sizeof m->text) {
        /* The Python side computes minute + seconds, both whole: subtracting is exact. */
        memcpy(m->text, key, (size_t)mlen);
        memcpy(m->text + mlen, key + mlen + 3, (size_t)rest);
        m->len = mlen + rest;
        m->t = v - ss;
    } else {
        m->len = 0;
    }
    *t = v;
    return 0;
}

/* A line for the full parser: its packet (if any) is appended; it counts itself. */
static int slow_line(Ctx *x, PyObject *out, PyObject *line) {
    x->sys_minute.len = x->iso_minute.len = 0;
    PyObject *ev = PyObject_CallFunctionObjArgs(x->slow, line, NULL);
    if (ev == NULL) return -1;
    int rc = ev == Py_None ? 0 : PyList_Append(out, ev);
    Py_DECREF(ev);
    return rc;
}

static PyObject *time_object(Ctx *x, double t) {
    if (x->last_time == NULL || memcmp(&t, &x->last_t, sizeof t) != 0) {
        PyObject *f = PyFloat_FromDouble(t);
        if (f == NULL) return NULL;
        Py_XDECREF(x->last_time);
        x->last_time = f;
        x->last_t = t;
    }
    Py_INCREF(x->last_time);
    return x->last_time;
}

static PyObject *packet(Ctx *x, const IfacePair *pair, double t, PyObject *src,
                        PyObject *dst, PyObject *proto, long sport, long dport) {
    PyObject *tup = PyTuple_New(8);
    if (tup == NULL) return NULL;
    PyObject *ft = time_object(x, t);
    PyObject *sp = sport < 0 ? (Py_INCREF(Py_None), Py_None) : port_object(sport);
    PyObject *dp = dport < 0 ? (Py_INCREF(Py_None), Py_None) : port_object(dport);
    if (ft == NULL || sp == NULL || dp == NULL) {
        Py_XDECREF(ft);
        Py_XDECREF(sp);
        Py_XDECREF(dp);
        Py_DECREF(tup);
        return NULL;
    }
    Py_INCREF(src);
    Py_INCREF(dst);
    Py_INCREF(proto);
    PyTuple_SetItem(tup, 0, ft);
    PyTuple_SetItem(tup, 1, src);
    PyTuple_SetItem(tup, 2, dst);
    PyTuple_SetItem(tup, 3, proto);
    PyTuple_SetItem(tup, 4, sp);
    PyTuple_SetItem(tup, 5, dp);
    Py_INCREF(pair->in);
    Py_INCREF(pair->out);
    PyTuple_SetItem(tup, 6, pair->in);
    PyTuple_SetItem(tup, 7, pair->out);
    return tup;
}

static int cut_line(Ctx *x, const char *c, Py_ssize_t len, PyObject *out);

/* The sieve's memory: (destination, source or its /64) → when it was last heard and the line
 * held for it, in an open-addressing table of C structs (a Python dict of bytes keys and
 * tuples cost ~0.5 us a line: as much as the rest of the cut). It lives in a capsule that
 * the parser keeps from one block to the next (hold()). */
typedef struct {
    unsigned char key[33]; /* address family length, destination, source */
    unsigned char klen;    /* 0: empty */
    double last;
    char *line; /* a copy of the held line (PyMem), NULL once released */
    Py_ssize_t len;
} HoldEntry;

typedef struct Hold {
    HoldEntry *e;
    size_t cap, used; /* cap: a power of two, at least twice used */
    double newest;
} Hold;

static const char HOLD_NAME[] = "ntpguard.logs._cut.hold";

static void hold_free(PyObject *capsule) {
    Hold *h = PyCapsule_GetPointer(capsule, HOLD_NAME);
    if (h == NULL) return;
    for (size_t i = 0; i < h->cap; i++) PyMem_Free(h->e[i].line);
    PyMem_Free(h->e);
    PyMem_Free(h);
}

/* The entry of key, or the empty slot where it goes. */
static HoldEntry *hold_slot(Hold *h, const unsigned char *key, int n) {
    size_t mask = h->cap - 1;
    for (size_t i = (size_t)hash_bytes(key, (size_t)n) & mask;; i = (i + 1) & mask) {
        HoldEntry *e = &h->e[i];
        if (e->klen == 0 || (e->klen == n && memcmp(e->key, key, (size_t)n) == 0)) return e;
    }
}

/* Room for one more: drop what is older than the window (a later packet from its source
 * could not release it: it counts as new), and grow if the rest still fills half. A hostile
 * log of new sources keeps it at a window's worth of them. */
static int hold_room(Hold *h, double window) {
    if (2 * (h->used + 1) <= h->cap) return 0;
    size_t kept = 0;
    for (size_t i = 0; i < h->cap; i++)
        kept += h->e[i].klen && h->e[i].last >= h->newest - window;
    size_t cap = 1024;
    while (cap < 4 * kept) cap *= 2;
    HoldEntry *old = h->e, *e = PyMem_Malloc(cap * sizeof *e);
    if (e == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(e, 0, cap * sizeof *e);
    size_t oldcap = h->cap;
    h->e = e;
    h->cap = cap;
    h->used = 0;
    for (size_t i = 0; i < oldcap; i++) {
        HoldEntry *o = &old[i];
        if (o->klen == 0) continue;
        if (o->last >= h->newest - window) {
            *hold_slot(h, o->key, o->klen) = *o;
            h->used++;
        } else {
            PyMem_Free(o->line);
        }
    }
    PyMem_Free(old);
    return 0;
}

PyDoc_STRVAR(hold_doc, "hold() -> the sieve's memory, for cut()'s hold argument");

static PyObject *hold_new(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    Hold *h = PyMem_Malloc(sizeof *h);
    if (h == NULL) return PyErr_NoMemory();
    h->cap = 1024;
    h->used = 0;
    h->newest = 0.0;
    h->e = PyMem_Malloc(h->cap * sizeof *h->e);
    if (h->e == NULL) {
        PyMem_Free(h);
        return PyErr_NoMemory();
    }
    memset(h->e, 0, h->cap * sizeof *h->e);
    PyObject *capsule = PyCapsule_New(h, HOLD_NAME, hold_free);
    if (capsule == NULL) {
        PyMem_Free(h->e);
        PyMem_Free(h);
    }
    return capsule;
}

/* The sieve: most of an internet-facing log is background radiation, one packet from each
 * of hundreds of thousands of sources; the detector keeps nothing for a source until it
 * probes a second port. Here such a packet is not even made: a packet that came in (and so
 * can be no trigger) is held as its line under (dst, source /64) until its source sends
 * another packet to that address within `window` seconds; then the held line and every later
 * one pass. A held line nobody follows is dropped when a newer one takes its key or falls
 * out of the window. The detector sees every packet that could matter to it, so its results
 * are the same (tests/test_detect.py checks it); the parser's equality tests run without it.
 * 1 = held, 0 = not held (a released line was appended first), -1 = error. */
static int sieve(Ctx *x, const char *line, Py_ssize_t len, const char *src, Py_ssize_t slen, const char *dst,
                 Py_ssize_t dlen, double t, PyObject *out) {
    unsigned char a[16], b[16], key[33];
    int na = parse_plain(dst, dlen, a), nb = parse_plain(src, slen, b);
    if (na <= 0 || nb <= 0) return 0;
    if (x->aggregate && nb == 16) nb = 8; /* the scanner's /64, as detect.source_key */
    key[0] = (unsigned char)na;
    memcpy(key + 1, a, (size_t)na);
    memcpy(key + 1 + na, b, (size_t)nb);
    int n = 1 + na + nb;
    Hold *h = x->hold;
    if (t > h->newest) h->newest = t;
    HoldEntry *e = hold_slot(h, key, n);
    if (e->klen != 0 && t - e->last <= x->window) {
        /* A second packet in the window: this and all later ones pass. */
        char *held = e->line;
        Py_ssize_t n_held = e->len;
        e->line = NULL;
        e->last = t;
        if (held == NULL) return 0;
        x->releasing = 1;
        int rc = cut_line(x, held, n_held, out);
        x->releasing = 0;
        PyMem_Free(held);
        return rc < 0 ? -1 : 0;
    }
    if (e->klen == 0) {
        if (hold_room(h, x->window) < 0) return -1;
        e = hold_slot(h, key, n);
        memcpy(e->key, key, (size_t)n);
        e->klen = (unsigned char)n;
        h->used++;
    }
    /* A copy: the line may be part of a 4 MiB block that is gone when the source comes
     * back (malloc and copy cost ~50 ns; a Python bytes per line as much, before the split). */
    char *copy = e->line != NULL && e->len >= len ? e->line : PyMem_Realloc(e->line, (size_t)len + 1);
    if (copy == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(copy, line, (size_t)len);
    e->line = copy;
    e->len = len;
    e->last = t;
    return 1;
}

static IfacePair *find_pair(Ctx *x, const char *text, Py_ssize_t len) {
    for (int k = 0; k < x->n_pairs; k++) {
        IfacePair *pair = &x->pairs[k];
        if (pair->len == len && memcmp(pair->text, text, (size_t)len) == 0) return pair;
    }
    return NULL;
}

/* Remembers an interface text (ASCII, at most 64 bytes) and its strs: the IN= value is its
 * first split bytes, the OUT= value what follows " OUT=". The pair is the block's (NULL with
 * an exception set). */
static IfacePair *new_pair(Ctx *x, const char *text, Py_ssize_t len, Py_ssize_t split) {
    PyObject *in = PyUnicode_FromStringAndSize(text, split);
    PyObject *out = in == NULL ? NULL : PyUnicode_FromStringAndSize(text + split + 5,
                                                                    len - split - 5);
    if (out == NULL) {
        Py_XDECREF(in);
        return NULL;
    }
    IfacePair *pair;
    if (x->n_pairs < IFACE_PAIRS) {
        pair = &x->pairs[x->n_pairs++];
    } else { /* a log with more than 8: the oldest goes */
        pair = &x->pairs[x->next_pair];
        x->next_pair = (x->next_pair + 1) % IFACE_PAIRS;
        Py_DECREF(pair->in);
        Py_DECREF(pair->out);
    }
    memcpy(pair->text, text, (size_t)len);
    pair->len = len;
    pair->in = in;
    pair->out = out;
    return pair;
}

/* One line: 1 = a packet appended (syslog), 2 = (RFC 3339), 3 = not netfilter, 0 = for the
 * full parser, -1 = error. A line the sieve holds counts as appended. */
static int cut_line(Ctx *x, const char *c, Py_ssize_t len, PyObject *out) {
    Py_ssize_t s = find_eq(c, len, " SRC=", 5, 0, len);
    if (s < 0) {
        /* Not a LOG line in any envelope; only JSON (ulogd2) needs a closer look. */
        if (memchr(c, '{', (size_t)len) != NULL) return 0;
        return 3;
    }
    double t;
    int kind;
    Py_ssize_t b0; /* where the message starts, after the stamp */
    if (x->syslog_ok && s > 15 && c[3] == ' ' && c[9] == ':') {
        /* "Mmm dd HH:MM:SS": the minute is the first 12 bytes. */
        int rc = stamp(&x->sys_minute, c, 15, 12, x->sys_time, &t);
        if (rc != 0) return rc < 0 ? -1 : 0;
        kind = 1;
        b0 = 16;
    } else if (x->iso_ok && len > 20 && c[4] == '-' && c[10] == 'T' && c[19] == '.') {
        Py_ssize_t sp, j;
        if (len > 32 && c[32] == ' ' && (c[26] == '+' || c[26] == '-')) {
            sp = 32;
            j = 26;
        } else {
            sp = find(c, len, " ", 1, 20, 48);
            if (sp < 0) return 0;
            j = find(c, len, "+", 1, 20, sp);
            if (j < 0) j = find(c, len, "-", 1, 20, sp);
            if (j < 0) j = find(c, len, "Z", 1, 20, sp);
        }
        /* Up to 15 fraction digits: their integer / 10^n is then the same double as
         * float(".digits") (both correctly rounded); longer ones are the full parser's. */
        if (j < 21 || j > 35 || s <= sp) return 0;
        long long frac = 0;
        for (Py_ssize_t i = 20; i < j; i++) {
            if (c[i] < '0' || c[i] > '9') return 0;
            frac = frac * 10 + (c[i] - '0');
        }
        /* The key: whole seconds and the offset, "2025-10-09T08:53:22+00:00"; the minute is
         * its first 16 bytes and the offset. */
        char key[64];
        Py_ssize_t klen = 19 + (sp - j);
        if (klen > (Py_ssize_t)sizeof key) return 0;
        memcpy(key, c, 19);
        memcpy(key + 19, c + j, (size_t)(sp - j));
        double base;
        int rc = stamp(&x->iso_minute, key, klen, 16, x->iso_time, &base);
        if (rc != 0) return rc < 0 ? -1 : 0;
        t = base + (double)frac / POW10[j - 20];
        kind = 2;
        b0 = sp + 1;
    } else {
        return 0;
    }
    /* The interfaces, as the full parser finds them: IN= is the last one before the last
     * " OUT=" (prefixes may hold either text); lines without both, or with non-ASCII names,
     * are the full parser's. */
    Py_ssize_t o = rfind_eq(c, len, " OUT=", 5, b0, s);
    Py_ssize_t i = o < 0 ? -1 : rfind_eq(c, len, "IN=", 3, b0, o);
    if (i < 0) return 0;
    Py_ssize_t oe = find(c, len, " ", 1, o + 5, s + 1);
    if (oe < 0) return 0;
    Py_ssize_t ilen = oe - i - 3;
    /* The strs are made only for a packet the sieve lets through. */
    IfacePair *pair = find_pair(x, c + i + 3, ilen);
    if (pair == NULL) {
        if (ilen > (Py_ssize_t)sizeof pair->text) return 0;
        for (Py_ssize_t k = i + 3; k < oe; k++)
            if ((unsigned char)c[k] >= 128) return 0;
    }
    /* The body: " SRC=a DST=b ... PROTO=p [SPT=n DPT=m ...]". */
    Py_ssize_t e = find(c, len, " ", 1, s + 5, len);
    if (e < 0) return 0;
    Py_ssize_t e2 = find(c, len, " ", 1, e + 5, len);
    if (e2 < 0 || e + 5 > len || memcmp(c + e + 1, "DST=", 4) != 0) return 0;
    Py_ssize_t p = find_eq(c, len, " PROTO=", 7, e2, len);
    if (p < 0) return 0;
    /* Python's line[p+7:p+36].split(b" ", 3): the protocol and, at most 29 bytes on, the
     * two port fields and something after them. */
    Py_ssize_t w0 = p + 7, w1 = p + 36 < len ? p + 36 : len;
    Py_ssize_t f1 = find(c, len, " ", 1, w0, w1);
    Py_ssize_t f2 = f1 < 0 ? -1 : find(c, len, " ", 1, f1 + 1, w1);
    Py_ssize_t f3 = f2 < 0 ? -1 : find(c, len, " ", 1, f2 + 1, w1);
    if (f3 < 0) return 0;
    const Proto *pr = NULL;
    int proto = 0;
    for (; proto < x->n_protos; proto++) {
        if (x->protos[proto].len == f1 - w0 &&
            memcmp(x->protos[proto].name, c + w0, (size_t)(f1 - w0)) == 0) {
            pr = &x->protos[proto];
            break;
        }
    }
    if (pr == NULL) return 0;
    long sport = -1, dport = -1;
    if (pr->ported) {
        sport = port(c + f1 + 1, f2 - f1 - 1, "SPT=");
        dport = port(c + f2 + 1, f3 - f2 - 1, "DPT=");
        if (sport < 0 || dport < 0) return 0;
        /* Came in (IN= set), and no trigger: received by the host, or forwarded but not
         * UDP to the trigger port (nor any port a trigger). */
        int in = o - i - 3 > 0, received = oe - o - 5 == 0;
        int ntp = pr->len == 3 && memcmp(pr->name, "UDP", 3) == 0 && dport == x->trigger_port;
        if (x->hold != NULL && !x->releasing && in && (received || (!x->any_port && !ntp))) {
            int held = sieve(x, c, len, c + s + 5, e - s - 5, c + e + 5, e2 - e - 5, t, out);
            if (held != 0) return held < 0 ? -1 : kind;
            pair = find_pair(x, c + i + 3, ilen); /* a released line may have replaced it */
        }
    }
    PyObject *src = address(x, c + s + 5, e - s - 5);
    if (src == NULL) return -1;
    PyObject *dst = address(x, c + e + 5, e2 - e - 5);
    if (dst == NULL) {
        Py_DECREF(src);
        return -1;
    }
    int rc;
    if (src == Py_None || dst == Py_None) {
        rc = 0;
    } else if (pair == NULL && (pair = new_pair(x, c + i + 3, ilen, o - i - 3)) == NULL) {
        rc = -1;
    } else {
        PyObject *pk = packet(x, pair, t, src, dst, pr->value, sport, dport);
        rc = pk == NULL ? -1 : PyList_Append(out, pk);
        Py_XDECREF(pk);
        rc = rc < 0 ? -1 : kind;
    }
    Py_DECREF(src);
    Py_DECREF(dst);
    return rc;
}

/* protos (PROTO= bytes → (name, has ports)) into the table cut_line() searches. */
static int load_protos(Ctx *x, PyObject *protos) {
    PyObject *k, *v;
    Py_ssize_t pos = 0;
    while (PyDict_Next(protos, &pos, &k, &v)) {
        char *name;
        Py_ssize_t n;
        if (x->n_protos == MAX_PROTOS || !PyBytes_Check(k) || !PyTuple_Check(v) ||
            PyTuple_Size(v) != 2 || PyBytes_AsStringAndSize(k, &name, &n) < 0 ||
            n > (Py_ssize_t)sizeof x->protos[0].name) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError,
                                "cut: protos: at most 32 short bytes keys, (name, has ports) values");
            return -1;
        }
        Proto *pr = &x->protos[x->n_protos++];
        memcpy(pr->name, name, (size_t)n);
        pr->len = n;
        pr->value = PyTuple_GetItem(v, 0);
        pr->ported = PyObject_IsTrue(PyTuple_GetItem(v, 1));
        if (pr->value == NULL || pr->ported < 0) return -1;
    }
    return 0;
}

PyDoc_STRVAR(cut_doc,
"cut(block, protos, canonical, sys_time, iso_time, slow, syslog_ok, iso_ok[, hold, window,\n"
"    trigger_port, any_port, aggregate])\n"
"-> (packets, n_syslog, n_rfc3339, n_not_netfilter)\n\n"
"Packets (t, src, dst, proto, sport, dport, iface_in, iface_out) of a block of raw lines,\n"
"in order: a list of bytes, or a chunk (head, data, end): the lines of head + data[:end]\n"
"(sources.Chunk; no bytes object per line). protos:\n"
"PROTO= bytes -> (name, has ports); canonical(raw) -> str ('' if not an address), for the\n"
"address forms not done here; sys_time(b'Mmm dd HH:MM:SS') and\n"
"iso_time(b'YYYY-MM-DDTHH:MM:SS<offset>') -> epoch seconds or None; slow(line) -> packet or\n"
"None for every line not taken here (it counts that line itself). hold: hold() for the\n"
"sieve (packets that came in from a source that has sent nothing else in `window` s are\n"
"held back, see sieve()), None for every packet.");

/* A line as a bytes object, for the full parser (most lines never need one). */
static int slow_text(Ctx *x, PyObject *out, const char *c, Py_ssize_t len) {
    PyObject *line = PyBytes_FromStringAndSize(c, len);
    if (line == NULL) return -1;
    int rc = slow_line(x, out, line);
    Py_DECREF(line);
    return rc;
}

/* The lines of a chunk (head, data, end): head + data[:end] split at newlines, as
 * bytes.split(b"\n") makes them (head is the end of the line the previous read cut). */
static int chunk_lines(Ctx *x, PyObject *block, PyObject *out, long counts[4]) {
    PyObject *head, *data;
    Py_ssize_t end;
    char *d, *h;
    Py_ssize_t dlen, hlen;
    if (!PyTuple_Check(block) || !PyArg_ParseTuple(block, "SSn:cut chunk", &head, &data, &end)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "cut: a block is a list of bytes or a chunk");
        return -1;
    }
    if (PyBytes_AsStringAndSize(data, &d, &dlen) < 0 || PyBytes_AsStringAndSize(head, &h, &hlen) < 0)
        return -1;
    if (end < 0 || end > dlen) {
        PyErr_SetString(PyExc_ValueError, "cut: chunk end out of range");
        return -1;
    }
    for (Py_ssize_t p = 0; p <= end;) {
        const char *nl = memchr(d + p, '\n', (size_t)(end - p));
        Py_ssize_t q = nl != NULL ? nl - d : end;
        int rc;
        if (p == 0 && hlen > 0) { /* the line the previous read cut: one join a block */
            PyObject *tail = PyBytes_FromStringAndSize(d, q);
            PyObject *line = tail == NULL ? NULL : PyNumber_Add(head, tail);
            Py_XDECREF(tail);
            if (line == NULL) return -1;
            char *c;
            Py_ssize_t len;
            rc = PyBytes_AsStringAndSize(line, &c, &len) < 0 ? -1 : cut_line(x, c, len, out);
            if (rc == 0) rc = slow_line(x, out, line);
            Py_DECREF(line);
        } else {
            rc = cut_line(x, d + p, q - p, out);
            if (rc == 0) rc = slow_text(x, out, d + p, q - p);
        }
        if (rc < 0) return -1;
        counts[rc]++;
        p = q + 1;
    }
    return 0;
}

static PyObject *cut(PyObject *self, PyObject *argv) {
    PyObject *block, *protos;
    Ctx x;
    (void)self;
    memset(&x, 0, sizeof x);
    PyObject *hold = Py_None;
    if (!PyArg_ParseTuple(argv, "OO!OOOOpp|Odlpp:cut", &block, &PyDict_Type,
                          &protos, &x.canonical, &x.sys_time, &x.iso_time, &x.slow,
                          &x.syslog_ok, &x.iso_ok, &hold, &x.window, &x.trigger_port,
                          &x.any_port, &x.aggregate))
        return NULL;
    if (hold != Py_None) {
        x.hold = PyCapsule_GetPointer(hold, HOLD_NAME);
        if (x.hold == NULL) return NULL; /* not hold()'s: TypeError or ValueError set */
    }
    if (load_protos(&x, protos) < 0) return NULL;
    x.slots = PyMem_Malloc(ADDR_SLOTS * sizeof *x.slots); /* (no PyMem_Calloc in 3.9's abi3) */
    if (x.slots == NULL) return PyErr_NoMemory();
    memset(x.slots, 0, ADDR_SLOTS * sizeof *x.slots);
    PyObject *out = PyList_New(0);
    long counts[4] = {0, 0, 0, 0};
    int failed = out == NULL;
    if (!failed && PyList_Check(block)) {
        Py_ssize_t n = PyList_Size(block);
        for (Py_ssize_t i = 0; i < n && !failed; i++) {
            PyObject *line = PyList_GetItem(block, i);
            char *c;
            Py_ssize_t len;
            if (line == NULL || PyBytes_AsStringAndSize(line, &c, &len) < 0) {
                failed = 1;
                break;
            }
            Py_INCREF(line);
            int rc = cut_line(&x, c, len, out);
            if (rc == 0) rc = slow_line(&x, out, line);
            Py_DECREF(line);
            if (rc < 0)
                failed = 1;
            else
                counts[rc]++;
        }
    } else if (!failed) {
        failed = chunk_lines(&x, block, out, counts) < 0;
    }
    for (int i = 0; i < ADDR_SLOTS; i++) Py_XDECREF(x.slots[i].value);
    PyMem_Free(x.slots);
    Py_XDECREF(x.last_time);
    for (int i = 0; i < x.n_pairs; i++) {
        Py_DECREF(x.pairs[i].in);
        Py_DECREF(x.pairs[i].out);
    }
    if (failed) {
        Py_XDECREF(out);
        return NULL;
    }
    return Py_BuildValue("(Nlll)", out, counts[1], counts[2], counts[3]);
}

static PyMethodDef methods[] = {
    {"cut", cut, METH_VARARGS, cut_doc},
    {"hold", hold_new, METH_NOARGS, hold_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_cut", "The fast path of ntpguard's log parser, in C.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cut(void) {
    init_classes();
    return PyModule_Create(&module);
}
