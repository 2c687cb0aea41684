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

/* Where a byte occurs in a line, 64 bytes at a time. cut_line() hops from '=' to '=' (a
 * netfilter line has one every ~25 bytes: ten hops to " SRC=" and on to " PROTO=") and from
 * ' ' to ' ' (the ends of the addresses, of the OUT= value and of the fields after PROTO=).
 * A memchr() call a hop, and a byte loop for the short ones, made the parse of the radiation
 * log (with the sieve) 7-10% slower than a bit mask of a 64-byte window whose bits are taken
 * one by one (measured, 3 blocks, best of 40 alternating runs: ~365 against ~340 ns a line).
 * The mask is made with 16-byte compares where the machine has them (SSE2: every x86-64) and
 * 8 bytes at a time elsewhere (ARM). Bit k of a mask is byte k of the window. */
typedef struct {
    const char *c;
    Py_ssize_t len;   /* the line's length */
    Py_ssize_t avail; /* bytes readable from c (>= len): a window may read past the line */
    Py_ssize_t base;  /* the window is c[base:base+64) */
    uint64_t mask;    /* its bytes equal to ch not yet passed */
    unsigned char ch;
} Scan;

static void scan_init(Scan *z, const char *c, Py_ssize_t len, Py_ssize_t avail, char ch) {
    z->c = c;
    z->len = len;
    z->avail = avail > len ? avail : len;
    z->base = -64; /* no window yet */
    z->mask = 0;
    z->ch = (unsigned char)ch;
}

/* The bytes of p[0:8] equal to ch as 8 bits: the high bit of each such byte (exactly: no
 * carry from one byte into the next), gathered into the top byte by a multiply whose partial
 * products never overlap. */
static inline uint64_t bits8(const char *p, unsigned char ch) {
    const uint64_t lows = 0x7f7f7f7f7f7f7f7fu;
    uint64_t w;
    memcpy(&w, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    w = __builtin_bswap64(w); /* byte k in bits 8k..8k+7, as on little-endian machines */
#endif
    w ^= 0x0101010101010101u * ch; /* bytes equal to ch become zero */
    uint64_t zero = ~(((w & lows) + lows) | w | lows);
    return (zero >> 7) * 0x0102040810204080u >> 56;
}

/* The mask of c[0:64), 8 bytes at a time (the portable way). */
static inline uint64_t mask_words(const char *c, unsigned char ch) {
    uint64_t m = 0;
    for (int k = 0; k < 8; k++) m |= bits8(c + 8 * k, ch) << (8 * k);
    return m;
}

#ifdef __SSE2__
#include <emmintrin.h>
/* The same with four 16-byte compares. */
static inline uint64_t mask_sse2(const char *c, unsigned char ch) {
    const __m128i pattern = _mm_set1_epi8((char)ch);
    uint64_t m = 0;
    for (int k = 0; k < 4; k++) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(c + 16 * k));
        m |= (uint64_t)(uint16_t)_mm_movemask_epi8(_mm_cmpeq_epi8(v, pattern)) << (16 * k);
    }
    return m;
}
#define mask_fast mask_sse2
#else
#define mask_fast mask_words
#endif

typedef uint64_t (*MaskOf)(const char *, unsigned char);

/* The mask of the window at base (< len); where fewer than 64 bytes are readable it reads a
 * zeroed copy, and bits past the line are cleared. */
static inline __attribute__((always_inline)) uint64_t window(const Scan *z, Py_ssize_t base,
                                                             MaskOf mask_of) {
    uint64_t m;
    if (base + 64 <= z->avail) {
        m = mask_of(z->c + base, z->ch);
    } else {
        char tail[64];
        memset(tail, 0, sizeof tail);
        memcpy(tail, z->c + base, (size_t)(z->avail - base));
        m = mask_of(tail, z->ch);
    }
    if (z->len - base < 64) m &= ((uint64_t)1 << (z->len - base)) - 1;
    return m;
}

/* Index of the first ch at or after q, or -1. Inlined with mask_of a constant (the portable
 * masks are tested beside the fast ones through scan_positions()). */
static inline __attribute__((always_inline)) Py_ssize_t scan_next_with(Scan *z, Py_ssize_t q,
                                                                       MaskOf mask_of) {
    if (q < 0) q = 0;
    if (q >= z->len) return -1;
    if (q < z->base || q >= z->base + 64) {
        z->base = q;
        z->mask = window(z, q, mask_of);
    } else {
        z->mask &= ~(uint64_t)0 << (q - z->base);
    }
    while (z->mask == 0) {
        if (z->base + 64 >= z->len) {
            z->base = -64; /* past the end: a later call starts a new window */
            return -1;
        }
        z->base += 64;
        z->mask = window(z, z->base, mask_of);
    }
    return z->base + __builtin_ctzll(z->mask);
}

static inline __attribute__((always_inline)) Py_ssize_t scan_next(Scan *z, Py_ssize_t q) {
    return scan_next_with(z, q, mask_fast);
}

/* The first ch in c[from:to) (to <= the line's length), or -1: bytes.find() with bounds. */
static inline __attribute__((always_inline)) Py_ssize_t scan_find(Scan *z, Py_ssize_t from,
                                                                  Py_ssize_t to) {
    Py_ssize_t k = scan_next(z, from);
    return k < to ? k : -1;
}

/* bytes.find() from `from` to the end, for a needle whose only '=' is its last byte
 * (" PROTO="), with a scan for '=': every occurrence ends at one. */
static inline __attribute__((always_inline)) Py_ssize_t
find_eq(Scan *eq, const char *needle, Py_ssize_t nlen, Py_ssize_t from) {
    /* inlined: with nlen a constant, the memcmp is one compare */
    if (from < 0) from = 0;
    for (Py_ssize_t q = scan_next(eq, from + nlen - 1); q >= 0; q = scan_next(eq, q + 1))
        if (memcmp(eq->c + q - (nlen - 1), needle, (size_t)(nlen - 1)) == 0) return q - (nlen - 1);
    return -1;
}

/* A hash of a short key, 8 bytes a step (a byte-at-a-time FNV over a 39-character IPv6
 * address is a chain of 39 multiplies: ~150 cycles, twice a line). */
static uint64_t hash_bytes(const void *key, size_t n) {
    const unsigned char *p = key;
    size_t total = n;
    uint64_t h = (uint64_t)n * 0x9e3779b97f4a7c15u;
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xff51afd7ed558ccdu;
        h ^= h >> 32;
    }
    if (n) { /* the last 8 bytes again where there are 8 (a copy of n bytes is a call) */
        uint64_t w = 0;
        if (total >= 8)
            memcpy(&w, p + n - 8, 8);
        else
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
    int ported, udp;
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
    /* The tap (see tap_take()); NULL when it is off. */
    struct Tap *tap;
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
    /* (text[4] is a ':' in the kernel's IPv6 form: no search for one then) */
    if (!(len > 4 && text[4] == ':') && memchr(text, ':', (size_t)len) == NULL) {
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
    uint64_t head;
    memcpy(&head, a, 8);
    int zero = head == 0 && a[8] == 0 && a[9] == 0;
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

/* stamp() for a key that is not in the remembered minute: convert(key), and its minute
 * remembered (ss: the key's seconds, -1 if it has none; rest: the bytes after them). */
static int stamp_convert(Minute *m, const char *key, Py_ssize_t len, Py_ssize_t mlen, int ss,
                         Py_ssize_t rest, PyObject *convert, double *t) {
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

/* The time of a stamp key whose minute is key[:mlen] + key[mlen+3:] and whose seconds are
 * key[mlen+1:mlen+3] (after a ':'): from the remembered minute, else from convert(key) (float
 * or None). 0 ok, 1 not a time, -1 error. Inlined: with a syslog stamp's constant lengths
 * the minute's compare is two loads, not two memcmp() calls (~100 instructions a line, as
 * valgrind counts them, of ~2800). */
static inline __attribute__((always_inline)) int stamp(Minute *m, const char *key, Py_ssize_t len,
                                                       Py_ssize_t mlen, PyObject *convert,
                                                       double *t) {
    int ss = key[mlen] == ':' ? seconds(key + mlen + 1) : -1;
    Py_ssize_t rest = len - mlen - 3;
    if (ss >= 0 && m->len == mlen + rest && memcmp(m->text, key, (size_t)mlen) == 0 &&
        memcmp(m->text + mlen, key + mlen + 3, (size_t)rest) == 0) {
        *t = m->t + ss;
        return 0;
    }
    return stamp_convert(m, key, len, mlen, ss, rest, convert, t);
}

static int tap_handed_object(struct Tap *tp, PyObject *ev);

/* A line for the full parser: its packet (if any) is appended; it counts itself. */
static int slow_line(Ctx *x, PyObject *out, PyObject *line) {
    x->sys_minute.len = x->iso_minute.len = 0;
    PyObject *ev = PyObject_CallFunctionObjArgs(x->slow, line, NULL);
    if (ev == NULL) return -1;
    int rc = ev == Py_None ? 0 : PyList_Append(out, ev);
    if (rc == 0 && ev != Py_None && x->tap != NULL) rc = tap_handed_object(x->tap, ev);
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

/* The tap: what the detector only counts, kept here instead of made into packets. After the
 * sieve, most packets of a gateway's log are its LAN's NTP polls (~430k of the radiation log's
 * ~460k), and each cost the detector's Python loop ~0.5 us: a deque append and a run update.
 * For an interface pair the detector has settled as sent only (detect.Sides.codes == SENT, it
 * says which: tap_pairs()), a packet that is no trigger means nothing to it but its time, and
 * a trigger only a run update and an entry in its sender's lookback queue. The tap keeps
 * those; it hands the packet over whenever the detector would do more with it: the first
 * packet, one that moves the time past a sweep (so the detector sweeps where it always did),
 * the first counted packet of an (address, server) pair (the detector makes its run and learns
 * the sender's prefix). The detector's own triggers (packets handed over) are added to the
 * same queues (tap_add()). Every entry has its place in the stream as its key: block << 32 |
 * 2 * (index of the next packet handed over) for one kept here, 2 * index + 1 for one handed
 * over, so a query or a sweep in the middle of a block sees exactly the entries before the
 * packet the detector is at, in stream order (tests/test_detect.py compares the results with
 * a read that hands over every packet). */
typedef struct {
    long long key;
    double t;
    PyObject *dst, *proto, *sport, *dport; /* owned */
} Sent;

typedef struct {
    PyObject *src; /* owned */
    Py_hash_t hash;
    Sent *v; /* v[head:n], by key (a sweep drops from the front: head moves, no copy) */
    size_t head, n, cap;
} Sender;

typedef struct {
    char text[96]; /* the source and destination as logged */
    unsigned char slen, dlen;
    uint64_t hash;
    PyObject *src, *dst; /* owned; NULL: an empty slot */
    double first, last, pfirst, plast;
    long n, pn; /* packets committed, and kept in the block the detector has not finished */
} Run;

typedef struct {
    char text[64];
    Py_ssize_t len, split;
    int code; /* 1 sent only, 2 received only (detect.SENT, RECEIVED) */
} SentPair;

typedef struct Tap {
    double now, swept, window, count_from, count_until;
    long trigger_port;
    int any_port, n_pairs;
    long long block;
    SentPair pairs[IFACE_PAIRS];
    AddrSlot *slots; /* the address cache, kept across blocks: runs are keyed by the strs */
    Sender *senders;
    size_t n_senders, cap_senders;
    size_t *index; /* open addressing: sender index + 1, 0 empty */
    size_t icap;
    Run *runs;
    size_t rcap, rused;
} Tap;

static const char TAP_NAME[] = "ntpguard.logs._cut.tap";

static void sent_clear(Sent *e) {
    Py_XDECREF(e->dst);
    Py_XDECREF(e->proto);
    Py_XDECREF(e->sport);
    Py_XDECREF(e->dport);
}

static void tap_free(PyObject *capsule) {
    Tap *tp = PyCapsule_GetPointer(capsule, TAP_NAME);
    if (tp == NULL) return;
    for (size_t i = 0; i < tp->n_senders; i++) {
        Sender *s = &tp->senders[i];
        for (size_t j = s->head; j < s->n; j++) sent_clear(&s->v[j]);
        PyMem_Free(s->v);
        Py_DECREF(s->src);
    }
    for (size_t i = 0; i < tp->rcap; i++) {
        Py_XDECREF(tp->runs[i].src);
        Py_XDECREF(tp->runs[i].dst);
    }
    for (int i = 0; i < ADDR_SLOTS; i++) Py_XDECREF(tp->slots[i].value);
    PyMem_Free(tp->slots);
    PyMem_Free(tp->senders);
    PyMem_Free(tp->index);
    PyMem_Free(tp->runs);
    PyMem_Free(tp);
}

static Tap *tap_of(PyObject *capsule) { return PyCapsule_GetPointer(capsule, TAP_NAME); }

static void *zalloc(size_t n) {
    void *p = PyMem_Malloc(n ? n : 1);
    if (p == NULL) PyErr_NoMemory();
    else memset(p, 0, n);
    return p;
}

/* The index of the senders, rebuilt (a power of two, at least twice their number). */
static int index_senders(Tap *tp) {
    size_t cap = 64;
    while (cap < 2 * tp->n_senders + 2) cap *= 2;
    size_t *index = zalloc(cap * sizeof *index);
    if (index == NULL) return -1;
    for (size_t i = 0; i < tp->n_senders; i++) {
        size_t k = (size_t)tp->senders[i].hash & (cap - 1);
        while (index[k]) k = (k + 1) & (cap - 1);
        index[k] = i + 1;
    }
    PyMem_Free(tp->index);
    tp->index = index;
    tp->icap = cap;
    return 0;
}

/* src's sender: NULL if it has none (create: make one; NULL then means an error is set). */
static Sender *sender(Tap *tp, PyObject *src, int create) {
    Py_hash_t h = PyObject_Hash(src);
    if (h == -1) return NULL;
    size_t k = (size_t)h & (tp->icap - 1);
    for (; tp->index[k]; k = (k + 1) & (tp->icap - 1)) {
        Sender *s = &tp->senders[tp->index[k] - 1];
        if (s->hash != h) continue;
        if (s->src == src) return s;
        int eq = PyObject_RichCompareBool(s->src, src, Py_EQ);
        if (eq < 0) return NULL;
        if (eq) return s;
    }
    if (!create) return NULL;
    if (tp->n_senders == tp->cap_senders) {
        size_t cap = tp->cap_senders ? 2 * tp->cap_senders : 64;
        Sender *grown = PyMem_Realloc(tp->senders, cap * sizeof *grown);
        if (grown == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        tp->senders = grown;
        tp->cap_senders = cap;
    }
    Sender *s = &tp->senders[tp->n_senders++];
    memset(s, 0, sizeof *s);
    Py_INCREF(src);
    s->src = src;
    s->hash = h;
    if (2 * tp->n_senders + 2 > tp->icap) {
        if (index_senders(tp) < 0) return NULL;
    } else {
        tp->index[k] = tp->n_senders;
    }
    return s;
}

/* An entry into its sender's queue, in key order (one kept here goes last; one the detector
 * adds goes before those this block's cut kept after its packet). Takes the references. */
static int sent_insert(Sender *s, Sent *e) {
    if (s->n == s->cap && s->head > 0) {
        memmove(s->v, s->v + s->head, (s->n - s->head) * sizeof *e);
        s->n -= s->head;
        s->head = 0;
    }
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        Sent *grown = PyMem_Realloc(s->v, cap * sizeof *grown);
        if (grown == NULL) {
            sent_clear(e);
            PyErr_NoMemory();
            return -1;
        }
        s->v = grown;
        s->cap = cap;
    }
    size_t at = s->n;
    while (at > s->head && s->v[at - 1].key > e->key) at--;
    if (at < s->n) memmove(&s->v[at + 1], &s->v[at], (s->n - at) * sizeof *e);
    s->v[at] = *e;
    s->n++;
    return 0;
}

/* The addresses of a run as logged (the key of its slot); NULL if they are too long. */
typedef struct {
    const char *src, *dst;
    Py_ssize_t slen, dlen;
    uint64_t hash;
} RunKey;

/* The run of a (source, destination) text pair, or the empty slot where it goes (two texts of
 * one address, like a zero-padded one, make two runs: the detector adds them up). */
static Run *run_slot(Tap *tp, const RunKey *k) {
    size_t mask = tp->rcap - 1;
    for (size_t i = (size_t)k->hash & mask;; i = (i + 1) & mask) {
        Run *r = &tp->runs[i];
        if (r->src == NULL || (r->hash == k->hash && r->slen == k->slen && r->dlen == k->dlen &&
                               memcmp(r->text, k->src, (size_t)k->slen) == 0 &&
                               memcmp(r->text + k->slen, k->dst, (size_t)k->dlen) == 0))
            return r;
    }
}

static Run *run_new(Tap *tp, const RunKey *k, PyObject *src, PyObject *dst) {
    if (2 * (tp->rused + 1) > tp->rcap) {
        size_t cap = tp->rcap * 2, old = tp->rcap;
        Run *runs = zalloc(cap * sizeof *runs), *prev = tp->runs;
        if (runs == NULL) return NULL;
        tp->runs = runs;
        tp->rcap = cap;
        for (size_t i = 0; i < old; i++) {
            if (prev[i].src == NULL) continue;
            RunKey pk = {prev[i].text, prev[i].text + prev[i].slen, prev[i].slen, prev[i].dlen,
                         prev[i].hash};
            *run_slot(tp, &pk) = prev[i];
        }
        PyMem_Free(prev);
    }
    Run *r = run_slot(tp, k);
    memcpy(r->text, k->src, (size_t)k->slen);
    memcpy(r->text + k->slen, k->dst, (size_t)k->dlen);
    r->slen = (unsigned char)k->slen;
    r->dlen = (unsigned char)k->dlen;
    r->hash = k->hash;
    Py_INCREF(src);
    Py_INCREF(dst);
    r->src = src;
    r->dst = dst;
    tp->rused++;
    return r;
}

/* The detector's time, moved by a packet it is handed (its sweep when it moves `window` on). */
static void tap_handed(Tap *tp, double t) {
    if (t > tp->now) {
        tp->now = t;
        if (t - tp->swept > tp->window) tp->swept = t;
    }
}

/* What the detector settled for an interface text: 1 sent only, 2 received only, 0 neither
 * or not settled. */
static int tap_code(const Tap *tp, const char *text, Py_ssize_t len, Py_ssize_t split) {
    for (int k = 0; k < tp->n_pairs; k++) {
        const SentPair *p = &tp->pairs[k];
        if (p->len == len && p->split == split && memcmp(p->text, text, (size_t)len) == 0)
            return p->code;
    }
    return 0;
}

/* A packet of a sent-only pair: 1 kept here, 0 to be handed over, -1 error. */
static int tap_take(Tap *tp, double t, const RunKey *key, PyObject *src, PyObject *dst,
                    const Proto *pr, long sport, long dport, Py_ssize_t handed) {
    int trigger = tp->any_port || (dport == tp->trigger_port && pr->udp);
    int hand = t > tp->now && (tp->now == 0.0 || t - tp->swept > tp->window);
    Run *run = NULL;
    if (trigger && t >= tp->count_from && t < tp->count_until) {
        if (key->slen + key->dlen > (Py_ssize_t)sizeof run->text) return 0;
        run = run_slot(tp, key);
        if (run->src == NULL) {
            if (run_new(tp, key, src, dst) == NULL) return -1;
            run = NULL;
            hand = 1;
        }
    }
    if (hand) return 0;
    if (trigger) {
        Sender *s = sender(tp, src, 1);
        if (s == NULL) return -1;
        Sent e = {tp->block << 32 | (long long)(2 * handed), t, dst, pr->value,
                  port_object(sport), port_object(dport)};
        Py_INCREF(dst);
        Py_INCREF(pr->value);
        if (e.sport == NULL || e.dport == NULL) {
            sent_clear(&e);
            return -1;
        }
        if (sent_insert(s, &e) < 0) return -1;
    }
    if (t > tp->now) tp->now = t;
    if (run != NULL) {
        if (run->pn == 0) {
            run->pfirst = run->plast = t;
        } else if (t > run->plast) {
            run->plast = t;
        } else if (t < run->pfirst) {
            run->pfirst = t;
        }
        run->pn++;
    }
    return 1;
}

/* A packet the full parser made, handed over: its time moves the detector's. */
static int tap_handed_object(Tap *tp, PyObject *ev) {
    PyObject *t = PyTuple_GetItem(ev, 0);
    if (t == NULL) return -1;
    double v = PyFloat_AsDouble(t);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    tap_handed(tp, v);
    return 0;
}

PyDoc_STRVAR(tap_doc,
"tap(window, trigger_port, any_port, count_from, count_until) -> what cut() may keep from\n"
"the detector (its tap argument): see the tap_* functions");

static PyObject *tap_new(PyObject *self, PyObject *args) {
    (void)self;
    Tap *tp = zalloc(sizeof *tp);
    if (tp == NULL) return NULL;
    if (!PyArg_ParseTuple(args, "dlpdd:tap", &tp->window, &tp->trigger_port, &tp->any_port,
                          &tp->count_from, &tp->count_until)) {
        PyMem_Free(tp);
        return NULL;
    }
    tp->rcap = 1024;
    tp->slots = zalloc(ADDR_SLOTS * sizeof *tp->slots);
    tp->runs = tp->slots == NULL ? NULL : zalloc(tp->rcap * sizeof *tp->runs);
    if (tp->runs == NULL || index_senders(tp) < 0) {
        PyMem_Free(tp->slots);
        PyMem_Free(tp->runs);
        PyMem_Free(tp);
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(tp, TAP_NAME, tap_free);
    if (capsule == NULL) {
        PyMem_Free(tp->index);
        PyMem_Free(tp->slots);
        PyMem_Free(tp->runs);
        PyMem_Free(tp);
    }
    return capsule;
}

PyDoc_STRVAR(tap_pairs_doc,
"tap_pairs(tap, pairs): the interface pairs whose packets are sent only (code 1) or received\n"
"only (2), as a list of (b'IN_VALUE OUT=OUT_VALUE', len(IN_VALUE), code); at most 8 are used");

static PyObject *tap_pairs(PyObject *self, PyObject *args) {
    PyObject *capsule, *pairs;
    (void)self;
    if (!PyArg_ParseTuple(args, "OO!:tap_pairs", &capsule, &PyList_Type, &pairs)) return NULL;
    Tap *tp = tap_of(capsule);
    if (tp == NULL) return NULL;
    tp->n_pairs = 0;
    for (Py_ssize_t i = 0; i < PyList_Size(pairs) && tp->n_pairs < IFACE_PAIRS; i++) {
        char *text;
        Py_ssize_t len, split;
        int code;
        PyObject *item = PyList_GetItem(pairs, i);
        if (item == NULL || !PyArg_ParseTuple(item, "y#ni:tap_pairs", &text, &len, &split, &code))
            return NULL;
        if (len > (Py_ssize_t)sizeof tp->pairs[0].text || (code != 1 && code != 2)) continue;
        SentPair *p = &tp->pairs[tp->n_pairs++];
        memcpy(p->text, text, (size_t)len);
        p->len = len;
        p->split = split;
        p->code = code;
    }
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tap_block_doc,
"tap_block(tap, advance) -> the number of the block cut last (advance: count a block made\n"
"without cut())");

static PyObject *tap_block(PyObject *self, PyObject *args) {
    PyObject *capsule;
    int advance;
    (void)self;
    if (!PyArg_ParseTuple(args, "Op:tap_block", &capsule, &advance)) return NULL;
    Tap *tp = tap_of(capsule);
    if (tp == NULL) return NULL;
    tp->block += advance;
    return PyLong_FromLongLong(tp->block);
}

PyDoc_STRVAR(tap_commit_doc,
"tap_commit(tap) -> the time of the newest packet so far: the detector has finished the\n"
"block cut last, so its kept packets count in the runs");

static PyObject *tap_commit(PyObject *self, PyObject *capsule) {
    (void)self;
    Tap *tp = tap_of(capsule);
    if (tp == NULL) return NULL;
    for (size_t i = 0; i < tp->rcap; i++) {
        Run *r = &tp->runs[i];
        if (r->src == NULL || r->pn == 0) continue;
        if (r->n == 0) {
            r->first = r->pfirst;
            r->last = r->plast;
        } else {
            if (r->pfirst < r->first) r->first = r->pfirst;
            if (r->plast > r->last) r->last = r->plast;
        }
        r->n += r->pn;
        r->pn = 0;
    }
    return PyFloat_FromDouble(tp->now);
}

PyDoc_STRVAR(tap_add_doc,
"tap_add(tap, packet, key): a trigger the detector was handed, into its sender's queue");

static PyObject *tap_add(PyObject *self, PyObject *args) {
    PyObject *capsule, *ev;
    long long key;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOL:tap_add", &capsule, &ev, &key)) return NULL;
    Tap *tp = tap_of(capsule);
    if (tp == NULL) return NULL;
    PyObject *t = PyTuple_GetItem(ev, 0), *src = PyTuple_GetItem(ev, 1);
    PyObject *dst = PyTuple_GetItem(ev, 2), *proto = PyTuple_GetItem(ev, 3);
    PyObject *sport = PyTuple_GetItem(ev, 4), *dport = PyTuple_GetItem(ev, 5);
    if (dport == NULL) return NULL;
    double v = PyFloat_AsDouble(t);
    if (v == -1.0 && PyErr_Occurred()) return NULL;
    Sender *s = sender(tp, src, 1);
    if (s == NULL) return NULL;
    Sent e = {key, v, dst, proto, sport, dport};
    Py_INCREF(dst);
    Py_INCREF(proto);
    Py_INCREF(sport);
    Py_INCREF(dport);
    if (sent_insert(s, &e) < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tap_triggers_doc,
"tap_triggers(tap, src, lo, start, limit) -> [(time, dst, proto, sport, dport)] of src's\n"
"queue with a key below limit and lo <= time <= start, in stream order");

static PyObject *tap_triggers(PyObject *self, PyObject *args) {
    PyObject *capsule, *src;
    double lo, start;
    long long limit;
    (void)self;
    if (!PyArg_ParseTuple(args, "OOddL:tap_triggers", &capsule, &src, &lo, &start, &limit))
        return NULL;
    Tap *tp = tap_of(capsule);
    if (tp == NULL) return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL) return NULL;
    Sender *s = sender(tp, src, 0);
    if (s == NULL && PyErr_Occurred()) {
        Py_DECREF(out);
        return NULL;
    }
    for (size_t j = s != NULL ? s->head : 0; s != NULL && j < s->n && s->v[j].key < limit; j++) {
        Sent *e = &s->v[j];
        if (e->t < lo || e->t > start) continue;
        PyObject *item = Py_BuildValue("(dOOOO)", e->t, e->dst, e->proto, e->sport, e->dport);
        if (item == NULL || PyList_Append(out, item) < 0) {
            Py_XDECREF(item);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(item);
    }
    return out;
}

PyDoc_STRVAR(tap_sweep_doc,
"tap_sweep(tap, older, oldest, limit): what detect's sweep does to its queues, to the\n"
"entries with a key below limit: a sender's whole queue goes if its newest entry is older\n"
"than `older`, else its entries from the front while older than `oldest`");

static PyObject *tap_sweep(PyObject *self, PyObject *args) {
    PyObject *capsule;
    double older, oldest;
    long long limit;
    (void)self;
    if (!PyArg_ParseTuple(args, "OddL:tap_sweep", &capsule, &older, &oldest, &limit))
        return NULL;
    Tap *tp = tap_of(capsule);
    if (tp == NULL) return NULL;
    size_t kept = 0;
    int gone = 0;
    for (size_t i = 0; i < tp->n_senders; i++) {
        Sender *s = &tp->senders[i];
        size_t m = s->n;
        while (m > s->head && s->v[m - 1].key >= limit) m--;
        size_t drop = s->head;
        if (m > s->head && s->v[m - 1].t < older) {
            drop = m;
        } else {
            while (drop < m && s->v[drop].t < oldest) drop++;
        }
        for (size_t j = s->head; j < drop; j++) sent_clear(&s->v[j]);
        s->head = drop;
        if (s->head == s->n) {
            PyMem_Free(s->v);
            Py_DECREF(s->src);
            gone = 1;
            continue;
        }
        tp->senders[kept++] = *s;
    }
    tp->n_senders = kept;
    if (gone && index_senders(tp) < 0) return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(tap_runs_doc,
"tap_runs(tap) -> [(src, dst, first, last, packets)]: the packets of runs kept here, in\n"
"the blocks the detector finished");

static PyObject *tap_runs(PyObject *self, PyObject *capsule) {
    (void)self;
    Tap *tp = tap_of(capsule);
    if (tp == NULL) return NULL;
    PyObject *out = PyList_New(0);
    for (size_t i = 0; out != NULL && i < tp->rcap; i++) {
        Run *r = &tp->runs[i];
        if (r->src == NULL || r->n == 0) continue;
        PyObject *item = Py_BuildValue("(OOddl)", r->src, r->dst, r->first, r->last, r->n);
        if (item == NULL || PyList_Append(out, item) < 0) Py_CLEAR(out);
        Py_XDECREF(item);
    }
    return out;
}

static int cut_line(Ctx *x, const char *c, Py_ssize_t len, Py_ssize_t avail, PyObject *out);

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
 * log of new sources keeps it at a window's worth of them. 1 if the table was rebuilt (its
 * slots moved), 0 if not, -1 error. */
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
    return 1;
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
        int rc = cut_line(x, held, n_held, n_held, out);
        x->releasing = 0;
        PyMem_Free(held);
        return rc < 0 ? -1 : 0;
    }
    if (e->klen == 0) {
        /* The slot found above, unless the table was rebuilt: looking it up again for
         * every new source hashed each radiation line's key twice (~2% of the parse's
         * instructions). */
        int moved = hold_room(h, x->window);
        if (moved < 0) return -1;
        if (moved) e = hold_slot(h, key, n);
        memcpy(e->key, key, (size_t)n);
        e->klen = (unsigned char)n;
        h->used++;
    }
    /* A copy: the line may be part of a 1 MiB block that is gone when the source comes
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
static int cut_line(Ctx *x, const char *c, Py_ssize_t len, Py_ssize_t avail, PyObject *out) {
    /* One walk from '=' to '=' finds " SRC=" and, before it, the last " OUT=" and the last
     * "IN=" before that (what a find and two backward finds, rfind, found in three walks:
     * ~30% of the memchr calls a line); they are held against the stamp's end below.
     * avail: the bytes readable from c, the line and what follows it in its block. */
    Py_ssize_t s = -1, o = -1, i = -1, in_at = -1;
    Scan eq;
    scan_init(&eq, c, len, avail, '=');
    for (Py_ssize_t q = scan_next(&eq, 2); q >= 0; q = scan_next(&eq, q + 1)) {
        if (q >= 4 && c[q - 1] == 'C' && memcmp(c + q - 4, " SRC", 4) == 0) {
            s = q - 4;
            break;
        }
        if (q >= 4 && c[q - 1] == 'T' && memcmp(c + q - 4, " OUT", 4) == 0) {
            o = q - 4;
            i = in_at;
        } else if (c[q - 1] == 'N' && c[q - 2] == 'I') {
            in_at = q - 2;
        }
    }
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
    if (o < b0) o = -1; /* (the last " OUT=" before " SRC=", if after the stamp) */
    if (o < 0 || i < b0) i = -1;
    if (i < 0) return 0;
    Scan spaces;
    scan_init(&spaces, c, len, avail, ' ');
    Py_ssize_t oe = scan_find(&spaces, o + 5, s + 1);
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
    Py_ssize_t e = scan_find(&spaces, s + 5, len);
    if (e < 0) return 0;
    Py_ssize_t e2 = scan_find(&spaces, e + 5, len);
    if (e2 < 0 || e + 5 > len || memcmp(c + e + 1, "DST=", 4) != 0) return 0;
    Py_ssize_t p = find_eq(&eq, " PROTO=", 7, e2);
    if (p < 0) return 0;
    /* Python's line[p+7:p+36].split(b" ", 3): the protocol and, at most 29 bytes on, the
     * two port fields and something after them. */
    Py_ssize_t w0 = p + 7, w1 = p + 36 < len ? p + 36 : len;
    Py_ssize_t f1 = scan_find(&spaces, w0, w1);
    Py_ssize_t f2 = f1 < 0 ? -1 : scan_find(&spaces, f1 + 1, w1);
    Py_ssize_t f3 = f2 < 0 ? -1 : scan_find(&spaces, f2 + 1, w1);
    if (f3 < 0) return 0;
    const Proto *pr = NULL;
    int proto = 0;
    for (; proto < x->n_protos; proto++) {
        if (x->protos[proto].len == f1 - w0 && x->protos[proto].name[0] == c[w0] &&
            memcmp(x->protos[proto].name, c + w0, (size_t)(f1 - w0)) == 0) {
            pr = &x->protos[proto];
            break;
        }
    }
    if (pr == NULL) return 0;
    long sport = -1, dport = -1;
    int code = 0; /* what the tap says of the interfaces (tap_code()), for ported packets */
    if (pr->ported) {
        sport = port(c + f1 + 1, f2 - f1 - 1, "SPT=");
        dport = port(c + f2 + 1, f3 - f2 - 1, "DPT=");
        if (sport < 0 || dport < 0) return 0;
        /* Came in (IN= set), and no trigger: received by the host, or forwarded but not
         * UDP to the trigger port (nor any port a trigger), or forwarded to the side the
         * detector settled as the LAN's (the radiation log's inbound NTP: ~19k packets). */
        code = x->tap != NULL ? tap_code(x->tap, c + i + 3, ilen, o - i - 3) : 0;
        int in = o - i - 3 > 0, received = oe - o - 5 == 0 || code == 2;
        int ntp = pr->udp && dport == x->trigger_port;
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
    } else if (code == 1 && pr->ported &&
               (rc = tap_take(x->tap, t, &(RunKey){c + s + 5, c + e + 5, e - s - 5, e2 - e - 5,
                                                   hash_bytes(c + s + 5, (size_t)(e2 - s - 5))},
                              src, dst, pr, sport, dport, PyList_Size(out))) != 0) {
        rc = rc < 0 ? -1 : kind; /* kept by the tap */
    } else if (pair == NULL && (pair = new_pair(x, c + i + 3, ilen, o - i - 3)) == NULL) {
        rc = -1;
    } else {
        PyObject *pk = packet(x, pair, t, src, dst, pr->value, sport, dport);
        rc = pk == NULL ? -1 : PyList_Append(out, pk);
        Py_XDECREF(pk);
        rc = rc < 0 ? -1 : kind;
        if (rc > 0 && x->tap != NULL) tap_handed(x->tap, t);
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
        pr->udp = n == 3 && memcmp(name, "UDP", 3) == 0;
        if (pr->value == NULL || pr->ported < 0) return -1;
    }
    return 0;
}

PyDoc_STRVAR(cut_doc,
"cut(block, protos, canonical, sys_time, iso_time, slow, syslog_ok, iso_ok[, hold, window,\n"
"    trigger_port, any_port, aggregate, tap])\n"
"-> (packets, n_syslog, n_rfc3339, n_not_netfilter)\n\n"
"Packets (t, src, dst, proto, sport, dport, iface_in, iface_out) of a block of raw lines,\n"
"in order: a list of bytes, or a chunk (head, data, end): the lines of head + data[:end]\n"
"(sources.Chunk; no bytes object per line). protos:\n"
"PROTO= bytes -> (name, has ports); canonical(raw) -> str ('' if not an address), for the\n"
"address forms not done here; sys_time(b'Mmm dd HH:MM:SS') and\n"
"iso_time(b'YYYY-MM-DDTHH:MM:SS<offset>') -> epoch seconds or None; slow(line) -> packet or\n"
"None for every line not taken here (it counts that line itself). hold: hold() for the\n"
"sieve (packets that came in from a source that has sent nothing else in `window` s are\n"
"held back, see sieve()), None for every packet. tap: tap() to keep what the detector only\n"
"counts (see tap_take()), None to hand over every packet.");

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
            rc = PyBytes_AsStringAndSize(line, &c, &len) < 0 ? -1 : cut_line(x, c, len, len, out);
            if (rc == 0) rc = slow_line(x, out, line);
            Py_DECREF(line);
        } else {
            rc = cut_line(x, d + p, q - p, dlen - p, out);
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
    PyObject *hold = Py_None, *tap = Py_None;
    if (!PyArg_ParseTuple(argv, "OO!OOOOpp|OdlppO:cut", &block, &PyDict_Type,
                          &protos, &x.canonical, &x.sys_time, &x.iso_time, &x.slow,
                          &x.syslog_ok, &x.iso_ok, &hold, &x.window, &x.trigger_port,
                          &x.any_port, &x.aggregate, &tap))
        return NULL;
    if (hold != Py_None) {
        x.hold = PyCapsule_GetPointer(hold, HOLD_NAME);
        if (x.hold == NULL) return NULL; /* not hold()'s: TypeError or ValueError set */
    }
    if (tap != Py_None) {
        x.tap = tap_of(tap);
        if (x.tap == NULL) return NULL;
        x.tap->block++;
    }
    if (load_protos(&x, protos) < 0) return NULL;
    if (x.tap != NULL) {
        x.slots = x.tap->slots;
    } else {
        x.slots = PyMem_Malloc(ADDR_SLOTS * sizeof *x.slots); /* (no PyMem_Calloc in 3.9's abi3) */
        if (x.slots == NULL) return PyErr_NoMemory();
        memset(x.slots, 0, ADDR_SLOTS * sizeof *x.slots);
    }
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
            int rc = cut_line(&x, c, len, len, out);
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
    if (x.tap == NULL) {
        for (int i = 0; i < ADDR_SLOTS; i++) Py_XDECREF(x.slots[i].value);
        PyMem_Free(x.slots);
    }
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

PyDoc_STRVAR(scan_positions_doc,
"scan_positions(data, length, byte, portable) -> the offsets of byte (an int) in\n"
"data[:length], found as cut() finds '=' and ' ' (its windows may read on into\n"
"data[length:]); portable: with the 8-bytes-at-a-time masks of machines without SSE2,\n"
"instead of this build's own. For the tests.");

static PyObject *scan_positions(PyObject *self, PyObject *args) {
    const char *data;
    Py_ssize_t size, length;
    unsigned char byte;
    int portable;
    (void)self;
    if (!PyArg_ParseTuple(args, "y#nbp:scan_positions", &data, &size, &length, &byte,
                          &portable))
        return NULL;
    if (length < 0 || length > size) {
        PyErr_SetString(PyExc_ValueError, "scan_positions: length out of range");
        return NULL;
    }
    Scan z;
    scan_init(&z, data, length, size, (char)byte);
    PyObject *out = PyList_New(0);
    for (Py_ssize_t q = 0; out != NULL; q++) {
        q = portable ? scan_next_with(&z, q, mask_words) : scan_next(&z, q);
        if (q < 0) break;
        PyObject *v = PyLong_FromSsize_t(q);
        if (v == NULL || PyList_Append(out, v) < 0) Py_CLEAR(out);
        Py_XDECREF(v);
    }
    return out;
}

static PyMethodDef methods[] = {
    {"cut", cut, METH_VARARGS, cut_doc},
    {"hold", hold_new, METH_NOARGS, hold_doc},
    {"tap", tap_new, METH_VARARGS, tap_doc},
    {"tap_pairs", tap_pairs, METH_VARARGS, tap_pairs_doc},
    {"tap_block", tap_block, METH_VARARGS, tap_block_doc},
    {"tap_commit", tap_commit, METH_O, tap_commit_doc},
    {"tap_add", tap_add, METH_VARARGS, tap_add_doc},
    {"tap_triggers", tap_triggers, METH_VARARGS, tap_triggers_doc},
    {"tap_sweep", tap_sweep, METH_VARARGS, tap_sweep_doc},
    {"tap_runs", tap_runs, METH_O, tap_runs_doc},
    {"scan_positions", scan_positions, METH_VARARGS, scan_positions_doc},
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
