/*
 * engine.core._policyscan: a one-pass reader of MTA-STS policy bodies (RFC 8461 §3.2).
 *
 * An optional accelerator for engine/core/policy.py, never the authority. It walks
 * an ASCII body once, checks every line against the same grammar as the reference
 * reader (policy._parse_lines) and builds the Policy, or returns None for anything
 * it does not accept: non-ASCII text, any grammar error, a missing field. The
 * caller then reads the body again in Python, which gives the same policy or the
 * precise error. So this file only ever has to be right about "yes"; property tests
 * and the atheris harness hold it to the reference reader.
 *
 * Why hand-written C: the parse sits on every policy fetch, and no library parses
 * MTA-STS bodies. The fastest strict reading found in Python costs about 2.6 us a
 * body (splitting, lookups, building the frozen objects); this reader makes no line
 * strings at all, only the mx values and extensions that go into the result.
 *
 * configure(policy_cls, modes, patterns) is called once by policy.py:
 *   policy_cls  the frozen, slotted Policy dataclass (slots mode, max_age, mx,
 *               version, extensions), built here as policy._new_policy builds it
 *   modes       (Mode.ENFORCE, Mode.TESTING, Mode.NONE)
 *   patterns    a dict from mx value (as written) to MxPattern, shared with the
 *               Python readers; parse() adds the values it meets, bounded
 *   pattern_cls the frozen, slotted MxPattern dataclass (slots domain, wildcard)
 * parse(text: str) -> Policy | None
 *
 * Every read is bounded by the text's length; no index is ever formed outside it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#define MAX_AGE_CEILING 31557600LL /* RFC 8461 §3.2 / AMB-1: one year */
#define MAX_NAME 32                /* RFC 8461 §3.2: ext-name is 1 to 32 characters */
#define MAX_DOMAIN 253             /* RFC 1035 §2.3.4 in text form */
#define MAX_LABEL 63               /* RFC 1035 §2.3.4 */

static inline int is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* RFC 8461 §3.2: sts-policy-ext-name = (ALPHA / DIGIT) *31(ALPHA / DIGIT / "_" / "-" / ".") */
static inline int is_name_char(unsigned char c)
{
    return is_alnum(c) || c == '_' || c == '-' || c == '.';
}

/*
 * RFC 5321 §4.1.2: Domain = sub-domain *("." sub-domain), sub-domain = Let-dig [Ldh-str];
 * labels of 1 to 63 characters (RFC 1035 §2.3.4), at most 253 in all. No underscore (POL-6).
 */
static int is_ldh_domain(const unsigned char *s, Py_ssize_t n)
{
    if (n <= 0 || n > MAX_DOMAIN)
        return 0;
    Py_ssize_t label = 0;
    unsigned char prev = '.';
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = s[i];
        if (c == '.') {
            if (label == 0 || prev == '-') /* empty label, or one ending in a hyphen */
                return 0;
            label = 0;
        } else if (c == '-') {
            if (label == 0) /* a label starting with a hyphen */
                return 0;
            label++;
        } else if (is_alnum(c)) {
            label++;
        } else {
            return 0;
        }
        if (label > MAX_LABEL)
            return 0;
        prev = c;
    }
    return label > 0 && prev != '-';
}

/* RFC 8461 §3.2: mx = ["*."] Domain; "*" only as the whole leftmost label. */
static int is_mx_pattern(const unsigned char *s, Py_ssize_t n)
{
    if (n >= 2 && s[0] == '*' && s[1] == '.')
        return is_ldh_domain(s + 2, n - 2);
    return is_ldh_domain(s, n);
}

static inline int equals(const unsigned char *s, Py_ssize_t n, const char *word)
{
    size_t len = strlen(word);
    return (size_t)n == len && memcmp(s, word, len) == 0;
}

/* What configure() was given (strong references, kept for the process's life). */
static PyTypeObject *policy_type;
static PyObject *slot_mode, *slot_max_age, *slot_mx, *slot_version, *slot_extensions;
static PyObject *modes;    /* a 3-tuple */
static PyObject *patterns; /* a dict: mx value as written -> MxPattern, bounded */
static PyTypeObject *pattern_type;
static PyObject *slot_domain, *slot_wildcard;
static PyObject *version_value, *empty_tuple;

static int set_slot(PyObject *slot, PyObject *obj, PyObject *value)
{
    /* The slot's own setter, as policy._new_policy calls it: it bypasses the frozen
     * dataclass's __setattr__, which only guards against changes after construction. */
    return Py_TYPE(slot)->tp_descr_set(slot, obj, value);
}

/* Bounded like policy._CACHE_SIZE: bodies repeat a few providers' names. */
#define PATTERN_TABLE_SIZE 4096

/* A new MxPattern for a checked value, as mx.parse_mx_pattern builds it: the
 * domain in lower case without the "*.", and the wildcard flag (RFC 8461 §4.1:
 * comparison is ASCII case-insensitive). */
static PyObject *new_pattern(PyObject *value)
{
    const char *s = (const char *)PyUnicode_1BYTE_DATA(value);
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    int wildcard = n >= 2 && s[0] == '*' && s[1] == '.';
    if (wildcard) {
        s += 2;
        n -= 2;
    }
    int lower = 1;
    for (Py_ssize_t k = 0; k < n && lower; k++)
        lower = !(s[k] >= 'A' && s[k] <= 'Z');
    PyObject *domain;
    if (lower && !wildcard) {
        domain = Py_NewRef(value); /* already the domain as compared */
    } else {
        if ((domain = PyUnicode_New(n, 127)) == NULL)
            return NULL;
        Py_UCS1 *out = PyUnicode_1BYTE_DATA(domain);
        for (Py_ssize_t k = 0; k < n; k++)
            out[k] = (s[k] >= 'A' && s[k] <= 'Z') ? (Py_UCS1)(s[k] + 32) : (Py_UCS1)s[k];
    }
    PyObject *obj = PyBaseObject_Type.tp_new(pattern_type, empty_tuple, NULL);
    if (obj != NULL
        && (set_slot(slot_domain, obj, domain) < 0
            || set_slot(slot_wildcard, obj, wildcard ? Py_True : Py_False) < 0))
        Py_CLEAR(obj);
    /* A pattern holds a str and a bool, so it can never be part of a reference cycle;
     * like CPython's own tuples of atomic values, it need not be seen by the cyclic GC.
     * The table keeps thousands of them alive, and each collection would walk them all. */
    if (obj != NULL && PyObject_GC_IsTracked(obj))
        PyObject_GC_UnTrack(obj);
    Py_DECREF(domain);
    return obj;
}

/* The pattern for a checked mx value: from the table, or made and remembered. */
static PyObject *pattern_for(PyObject *value)
{
    PyObject *pattern = PyDict_GetItemWithError(patterns, value); /* borrowed */
    if (pattern != NULL)
        return Py_NewRef(pattern);
    if (PyErr_Occurred() || (pattern = new_pattern(value)) == NULL)
        return NULL;
    if (PyDict_GET_SIZE(patterns) >= PATTERN_TABLE_SIZE)
        PyDict_Clear(patterns);
    if (PyDict_SetItem(patterns, value, pattern) < 0)
        Py_CLEAR(pattern);
    return pattern;
}

/* The Policy for the pieces parse() found; steals nothing. */
static PyObject *build(int mode, long long max_age, PyObject *values, PyObject *ext)
{
    Py_ssize_t n = PyList_GET_SIZE(values);
    PyObject *mx = PyTuple_New(n);
    if (mx == NULL)
        return NULL;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *pattern = pattern_for(PyList_GET_ITEM(values, k));
        if (pattern == NULL) {
            Py_DECREF(mx);
            return NULL;
        }
        PyTuple_SET_ITEM(mx, k, pattern);
    }
    PyObject *extensions = ext != NULL ? PyList_AsTuple(ext) : Py_NewRef(empty_tuple);
    PyObject *age = PyLong_FromLongLong(max_age);
    PyObject *obj = NULL;
    if (extensions != NULL && age != NULL)
        obj = PyBaseObject_Type.tp_new(policy_type, empty_tuple, NULL);
    if (obj != NULL
        && (set_slot(slot_mode, obj, PyTuple_GET_ITEM(modes, mode)) < 0
            || set_slot(slot_max_age, obj, age) < 0 || set_slot(slot_mx, obj, mx) < 0
            || set_slot(slot_version, obj, version_value) < 0
            || set_slot(slot_extensions, obj, extensions) < 0))
        Py_CLEAR(obj);
    Py_DECREF(mx);
    Py_XDECREF(extensions);
    Py_XDECREF(age);
    return obj;
}

static PyObject *
parse(PyObject *Py_UNUSED(module), PyObject *text)
{
    if (policy_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_policyscan.configure() was not called");
        return NULL;
    }
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "parse() takes a str");
        return NULL;
    }
    /* Non-ASCII bodies (UTF-8 values, U-labels) go to the Python readers. */
    if (!PyUnicode_IS_ASCII(text))
        Py_RETURN_NONE;
    const unsigned char *data = PyUnicode_1BYTE_DATA(text);
    const Py_ssize_t size = PyUnicode_GET_LENGTH(text);
    if (size == 0)
        Py_RETURN_NONE; /* POL-1: the reference reader names the error */

    int have_version = 0, mode = -1;
    long long max_age = -1;
    PyObject *mx = PyList_New(0);
    PyObject *ext = NULL; /* a list, made on the first extension */
    if (mx == NULL)
        return NULL;

    Py_ssize_t pos = 0;
    while (pos < size) {
        const unsigned char *nl = memchr(data + pos, '\n', (size_t)(size - pos));
        Py_ssize_t stop = nl ? nl - data : size; /* one past the line */
        Py_ssize_t end = stop;
        if (end > pos && data[end - 1] == '\r') {
            /* RFC 8461 §3.2 sts-policy-term = LF / CRLF (erratum 6253); AMB-3: a CR only
             * right before LF. A CR at the very end with no LF is a bare CR. */
            if (nl == NULL)
                goto reject;
            end--;
        }
        /* The field name, 1 to 32 characters, then ':' right after it (POL-11). */
        Py_ssize_t i = pos;
        if (i >= end || !is_alnum(data[i]))
            goto reject; /* AMB-4: an empty line; or a bad first character */
        i++;
        while (i < end && is_name_char(data[i]))
            i++;
        if (i - pos > MAX_NAME || i >= end || data[i] != ':')
            goto reject;
        const unsigned char *name = data + pos;
        Py_ssize_t name_len = i - pos;
        i++;
        /* RFC 8461 §3.2: field ":" *WSP value, and *WSP after the field. */
        while (i < end && (data[i] == ' ' || data[i] == '\t'))
            i++;
        Py_ssize_t v_end = end;
        while (v_end > i && (data[v_end - 1] == ' ' || data[v_end - 1] == '\t'))
            v_end--;
        if (v_end == i)
            goto reject; /* an empty value */
        /* sts-policy-value = vchar [*(SP / vchar) vchar]: the ends are VCHAR by the
         * trimming above; inside, SP and VCHAR only (no TAB, no CR, no CTL, no DEL). */
        for (Py_ssize_t k = i; k < v_end; k++) {
            if (data[k] < 0x20 || data[k] > 0x7e)
                goto reject;
        }
        const unsigned char *value = data + i;
        Py_ssize_t value_len = v_end - i;

        if (equals(name, name_len, "mx")) {
            /* POL-6: one ["*."] Domain per line; POL-9: mx lines are cumulative. */
            if (!is_mx_pattern(value, value_len))
                goto reject;
            PyObject *item = PyUnicode_FromStringAndSize((const char *)value, value_len);
            if (item == NULL)
                goto fail;
            int err = PyList_Append(mx, item);
            Py_DECREF(item);
            if (err < 0)
                goto fail;
        } else if (equals(name, name_len, "version")) {
            /* POL-8 / AMB-6: the first occurrence counts and must be well-formed; a later
             * one is an ignored extension that only needs the generic shape (checked). */
            if (!have_version) {
                if (!equals(value, value_len, "STSv1")) /* POL-3, case-sensitive */
                    goto reject;
                have_version = 1;
            }
        } else if (equals(name, name_len, "mode")) {
            if (mode < 0) {
                /* POL-4: %s"enforce" / %s"testing" / %s"none", case-sensitive. */
                if (equals(value, value_len, "enforce"))
                    mode = 0;
                else if (equals(value, value_len, "testing"))
                    mode = 1;
                else if (equals(value, value_len, "none"))
                    mode = 2;
                else
                    goto reject;
            }
        } else if (equals(name, name_len, "max_age")) {
            if (max_age < 0) {
                /* POL-5: 1*10(DIGIT), leading zeros allowed. */
                if (value_len > 10)
                    goto reject;
                long long age = 0;
                for (Py_ssize_t k = 0; k < value_len; k++) {
                    if (value[k] < '0' || value[k] > '9')
                        goto reject;
                    age = age * 10 + (value[k] - '0');
                }
                /* AMB-1 (erratum 7282): read all 10 digits, then clamp to one year. */
                max_age = age > MAX_AGE_CEILING ? MAX_AGE_CEILING : age;
            }
        } else {
            /* POL-7 / POL-12: unknown (and differently cased) names are kept. */
            if (ext == NULL && (ext = PyList_New(0)) == NULL)
                goto fail;
            PyObject *pair = Py_BuildValue(
                "(s#s#)", (const char *)name, name_len, (const char *)value, value_len);
            if (pair == NULL)
                goto fail;
            int err = PyList_Append(ext, pair);
            Py_DECREF(pair);
            if (err < 0)
                goto fail;
        }
        /* POL-10: the final terminator is optional; an empty last line is not a line. */
        pos = stop + 1;
    }
    /* POL-1: version, mode and max_age are required; POL-2: an mx unless mode is none
     * (POL-2(c): ``mode: none`` without mx is valid, as in the reference reader). */
    if (!have_version || mode < 0 || max_age < 0 || (mode != 2 && PyList_GET_SIZE(mx) == 0))
        goto reject;

    PyObject *result = build(mode, max_age, mx, ext);
    Py_DECREF(mx);
    Py_XDECREF(ext);
    return result;

reject:
    Py_DECREF(mx);
    Py_XDECREF(ext);
    Py_RETURN_NONE;
fail:
    Py_DECREF(mx);
    Py_XDECREF(ext);
    return NULL;
}

static PyObject *slot_of(PyTypeObject *type, const char *name)
{
    PyObject *slot = PyDict_GetItemString(type->tp_dict, name); /* borrowed */
    if (slot == NULL || Py_TYPE(slot)->tp_descr_set == NULL) {
        PyErr_Format(PyExc_TypeError, "%s has no settable slot %s", type->tp_name, name);
        return NULL;
    }
    return Py_NewRef(slot);
}

static PyObject *
configure(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *cls, *mode_tuple, *table, *pattern_cls;
    if (!PyArg_ParseTuple(args, "O!O!O!O!:configure", &PyType_Type, &cls, &PyTuple_Type,
                          &mode_tuple, &PyDict_Type, &table, &PyType_Type, &pattern_cls))
        return NULL;
    if (PyTuple_GET_SIZE(mode_tuple) != 3) {
        PyErr_SetString(PyExc_ValueError, "modes must be (enforce, testing, none)");
        return NULL;
    }
    PyTypeObject *type = (PyTypeObject *)cls;
    PyObject *mode_slot = NULL, *age_slot = NULL, *mx_slot = NULL, *version_slot = NULL;
    PyObject *ext_slot = NULL, *domain_slot = NULL, *wildcard_slot = NULL;
    if ((domain_slot = slot_of((PyTypeObject *)pattern_cls, "domain")) == NULL
        || (wildcard_slot = slot_of((PyTypeObject *)pattern_cls, "wildcard")) == NULL
        || (mode_slot = slot_of(type, "mode")) == NULL
        || (age_slot = slot_of(type, "max_age")) == NULL
        || (mx_slot = slot_of(type, "mx")) == NULL
        || (version_slot = slot_of(type, "version")) == NULL
        || (ext_slot = slot_of(type, "extensions")) == NULL) {
        Py_XDECREF(domain_slot);
        Py_XDECREF(wildcard_slot);
        Py_XDECREF(mode_slot);
        Py_XDECREF(age_slot);
        Py_XDECREF(mx_slot);
        Py_XDECREF(version_slot);
        return NULL;
    }
    if (version_value == NULL) {
        if ((version_value = PyUnicode_InternFromString("STSv1")) == NULL
            || (empty_tuple = PyTuple_New(0)) == NULL) {
            Py_CLEAR(version_value);
            Py_DECREF(domain_slot);
            Py_DECREF(wildcard_slot);
            Py_DECREF(mode_slot);
            Py_DECREF(age_slot);
            Py_DECREF(mx_slot);
            Py_DECREF(version_slot);
            Py_DECREF(ext_slot);
            return NULL;
        }
    }
    /* A second call (a reloaded policy module) replaces what the first one gave. */
    Py_XSETREF(slot_mode, mode_slot);
    Py_XSETREF(slot_max_age, age_slot);
    Py_XSETREF(slot_mx, mx_slot);
    Py_XSETREF(slot_version, version_slot);
    Py_XSETREF(slot_extensions, ext_slot);
    Py_XSETREF(modes, Py_NewRef(mode_tuple));
    Py_XSETREF(patterns, Py_NewRef(table));
    Py_XSETREF(policy_type, (PyTypeObject *)Py_NewRef(cls));
    Py_XSETREF(slot_domain, domain_slot);
    Py_XSETREF(slot_wildcard, wildcard_slot);
    Py_XSETREF(pattern_type, (PyTypeObject *)Py_NewRef(pattern_cls));
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"configure", configure, METH_VARARGS,
     "configure(policy_cls, modes, patterns, pattern_cls): what parse() builds its "
     "result from."},
    {"parse", parse, METH_O,
     "parse(text) -> Policy or None: a strict one-pass reading of an ASCII MTA-STS "
     "policy body; None for anything the Python readers must handle."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "engine.core._policyscan", NULL, -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__policyscan(void)
{
    return PyModule_Create(&module);
}
