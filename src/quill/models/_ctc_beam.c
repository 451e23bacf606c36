/*
 * CTC prefix beam search with Quill's character n-gram LM, compiled.
 *
 * The same search as quill.models.decoding._beam_search_one, step for step: the same
 * arithmetic in the same order (doubles, libm's exp/log1p/log, no contraction into fused
 * multiply-adds), the prefixes met in the same order and the same stable ranking, so it gives
 * the same ids and the same confidence to the bit. tests/models/test_beam_search_exact.py
 * holds both to the plain reference formulation. Python keeps the parts that are not per
 * prefix: choosing each frame's candidates (NumPy) and building the LM's tables (NumPy).
 * The search runs without the GIL (it reads only its call's arrays and the tables' buffers),
 * so a server's other recognition and its request handling run meanwhile.
 *
 * The LM: interpolated Kneser-Ney over contexts of up to `context_length` characters. Its
 * tables arrive as arrays (quill.models.language_model.CharNGramLM.beam_tables), used where
 * they lie (a compiled LM's are mapped from its files, so a new process builds nothing): per
 * context a slice [starts[i], starts[i + 1]) of (character, count) entries and its total,
 * and a hash table from each context's key (its character codes as digits of base `base`,
 * last character least significant; code 0 is never used, so every key names one context)
 * to the context (language_model.context_slots, linear probing from slot_of's home). Each
 * node (prefix) keeps the contexts its LM state is interpolated from (its "chain"), found
 * once, the first time a child of the node is scored, and its last few answers (a beam asks
 * about the same next characters frame after frame). The tables are laid
 * out so that a question touches few cache lines: a bench that takes turns with other
 * programs finds little of them in the CPU's caches. The same tables score a whole line for
 * the language identifiers (log_likelihood: the sum of log P(character | the characters
 * before it), as decoding.log_likelihood sums it in Python).
 *
 * A word list (quill.models.lexicon): its words hashed (FNV-1a over their lower-case code
 * points) into a hash table. With one, each word of a prefix missing from the list costs the
 * prefix word_penalty in its rank as soon as the word ends (a node keeps the hash of the word
 * it is in and how many missing words came before), and the word a final beam ends in is
 * counted at the end.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Changed whenever the search or the arguments change: Python uses the compiled search only
 * when this matches (a stale build falls back to the Python search). */
#define ABI_VERSION 6
#define MAX_CONTEXT 15
#define EMPTY_KEY UINT64_MAX

/* ------------------------------------------------------------------ the language model */

typedef struct {
    uint64_t key; /* EMPTY_KEY marks a free slot */
    uint64_t context;
} Slot;

typedef struct {
    int32_t character, count;
} Following;

typedef struct {
    Py_buffer slots, starts, totals, following, token_codes; /* u64, i64, i64, i32, i32 */
    const Slot *table;         /* slots' buffer: open addressing, key -> context */
    const Following *entries;  /* following's buffer: every context's entries */
    uint64_t mask;
    Py_ssize_t contexts;
    int context_length;
    uint64_t base;
    int32_t line_start;
    double uniform, discount; /* Kneser-Ney's, as language_model.DISCOUNT */
} CompiledLM;

static const char *LM_CAPSULE = "quill.models._ctc_beam.LM";

static uint64_t mixed(uint64_t key) { /* splitmix64's finaliser: keys differ in few bits */
    key ^= key >> 30;
    key *= 0xBF58476D1CE4E5B9ULL;
    key ^= key >> 27;
    key *= 0x94D049BB133111EBULL;
    return key ^ (key >> 31);
}

static uint64_t slot_of(uint64_t key, uint64_t mask) { return mixed(key) & mask; }

/* The context of a key, or -1 (also for a slot naming no context: a damaged table reads as
 * an unseen context rather than out of bounds). */
static int32_t find_context(const CompiledLM *lm, uint64_t key) {
    uint64_t slot = slot_of(key, lm->mask);
    for (uint64_t tried = 0; tried <= lm->mask; tried++, slot = (slot + 1) & lm->mask) {
        const Slot *found = &lm->table[slot];
        if (found->key == key)
            return found->context < (uint64_t)lm->contexts ? (int32_t)found->context : -1;
        if (found->key == EMPTY_KEY) return -1;
    }
    return -1;
}

static void free_lm(CompiledLM *lm) {
    Py_buffer *views[] = {&lm->slots, &lm->starts, &lm->totals, &lm->following,
                          &lm->token_codes};
    for (size_t i = 0; i < sizeof views / sizeof *views; i++)
        if (views[i]->obj != NULL) PyBuffer_Release(views[i]);
    free(lm);
}

static void lm_capsule_destructor(PyObject *capsule) {
    free_lm(PyCapsule_GetPointer(capsule, LM_CAPSULE));
}

static int get_view(PyObject *object, Py_buffer *view, Py_ssize_t itemsize, const char *name) {
    if (PyObject_GetBuffer(object, view, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return -1;
    if (view->itemsize != itemsize || view->ndim != 1) {
        PyErr_Format(PyExc_ValueError, "%s must be a 1-D array of %zd-byte integers", name,
                     itemsize);
        return -1;
    }
    return 0;
}

/* lm_tables(slots u64, starts i64, totals i64, following i32, token_codes i32,
 *           context_length, base, line_start, uniform, discount) -> capsule
 * The capsule holds the arrays' buffers (no copy): mapped files stay mapped while it lives. */
static PyObject *lm_tables(PyObject *self, PyObject *args) {
    PyObject *slots, *starts, *totals, *following, *token_codes;
    int context_length;
    unsigned long long base;
    int line_start;
    double uniform, discount;
    if (!PyArg_ParseTuple(args, "OOOOOiKidd", &slots, &starts, &totals, &following, &token_codes,
                          &context_length, &base, &line_start, &uniform, &discount))
        return NULL;
    if (context_length < 0 || context_length > MAX_CONTEXT) {
        PyErr_Format(PyExc_ValueError, "context_length must be 0..%d", MAX_CONTEXT);
        return NULL;
    }
    CompiledLM *lm = calloc(1, sizeof *lm);
    if (lm == NULL) return PyErr_NoMemory();
    lm->context_length = context_length;
    lm->base = base;
    lm->line_start = line_start;
    lm->uniform = uniform;
    lm->discount = discount;
    if (get_view(slots, &lm->slots, 8, "slots") < 0 ||
        get_view(starts, &lm->starts, 8, "starts") < 0 ||
        get_view(totals, &lm->totals, 8, "totals") < 0 ||
        get_view(following, &lm->following, 4, "following") < 0 ||
        get_view(token_codes, &lm->token_codes, 4, "token_codes") < 0)
        goto fail;
    Py_ssize_t contexts = lm->totals.shape[0], entries = lm->following.shape[0] / 2;
    Py_ssize_t size = lm->slots.shape[0] / 2;
    const int64_t *start_values = lm->starts.buf;
    if (lm->starts.shape[0] != contexts + 1 || lm->following.shape[0] % 2 ||
        start_values[0] != 0 || start_values[contexts] != entries) {
        PyErr_SetString(PyExc_ValueError, "inconsistent array lengths");
        goto fail;
    }
    if (lm->slots.shape[0] % 2 || size <= contexts || (size & (size - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "slots must be a power of two of pairs, more than the contexts");
        goto fail;
    }
    lm->table = lm->slots.buf;
    lm->entries = lm->following.buf;
    lm->mask = (uint64_t)size - 1;
    lm->contexts = contexts;
    PyObject *capsule = PyCapsule_New(lm, LM_CAPSULE, lm_capsule_destructor);
    if (capsule == NULL) free_lm(lm);
    return capsule;
fail:
    free_lm(lm);
    return NULL;
}

/* ---------------------------------------------------------------------------- word lists */

static const char *WORDS_CAPSULE = "quill.models._ctc_beam.Words";
#define WORD_START 0xCBF29CE484222325ULL /* FNV-1a's offset and prime, over code points */
#define WORD_STEP 0x100000001B3ULL

typedef struct {
    uint64_t *table; /* open addressing: a word's hash (never 0), 0 marks a free slot */
    uint64_t mask;
    int32_t *codes; /* per token: the code point of its letter in lower case, 0 for no letter */
    Py_ssize_t known;
} CompiledWords;

static uint64_t word_step(uint64_t hash, int32_t code) { return (hash ^ (uint64_t)code) * WORD_STEP; }

static int has_word(const CompiledWords *words, uint64_t hash) {
    if (hash == 0) hash = 1;
    for (uint64_t slot = slot_of(hash, words->mask);; slot = (slot + 1) & words->mask) {
        if (words->table[slot] == hash) return 1;
        if (words->table[slot] == 0) return 0;
    }
}

static void free_words(CompiledWords *words) {
    free(words->table);
    free(words->codes);
    free(words);
}

static void words_capsule_destructor(PyObject *capsule) {
    free_words(PyCapsule_GetPointer(capsule, WORDS_CAPSULE));
}

/* word_tables(letters u32: the words' code points, each word followed by a 0,
 *             codes i32: each token's lower-case letter or 0) -> capsule
 * Words are hashed first letter first, as a prefix grows. */
static PyObject *word_tables(PyObject *self, PyObject *args) {
    PyObject *letters_object, *codes_object;
    if (!PyArg_ParseTuple(args, "OO", &letters_object, &codes_object)) return NULL;
    Py_buffer letters = {0}, codes = {0};
    CompiledWords *words = calloc(1, sizeof *words);
    if (words == NULL) return PyErr_NoMemory();
    if (get_view(letters_object, &letters, 4, "letters") < 0 ||
        get_view(codes_object, &codes, 4, "codes") < 0)
        goto fail;
    const uint32_t *letter = letters.buf;
    Py_ssize_t length = letters.shape[0], count = 0;
    for (Py_ssize_t i = 0; i < length; i++) count += letter[i] == 0;
    uint64_t size = 16;
    while (size < 2 * (uint64_t)count) size <<= 1;
    words->mask = size - 1;
    words->known = codes.shape[0];
    words->table = calloc(size, sizeof *words->table);
    words->codes = malloc((codes.shape[0] + 1) * sizeof *words->codes);
    if (words->table == NULL || words->codes == NULL) {
        PyErr_NoMemory();
        goto fail;
    }
    memcpy(words->codes, codes.buf, codes.shape[0] * sizeof *words->codes);
    for (Py_ssize_t end = 0, start = 0; end < length; end++) {
        if (letter[end] != 0) continue;
        uint64_t hash = WORD_START;
        for (Py_ssize_t i = start; i < end; i++) hash = word_step(hash, (int32_t)letter[i]);
        if (hash == 0) hash = 1;
        uint64_t slot = slot_of(hash, words->mask);
        while (words->table[slot] != 0 && words->table[slot] != hash) slot = (slot + 1) & words->mask;
        words->table[slot] = hash;
        start = end + 1;
    }
    PyBuffer_Release(&letters);
    PyBuffer_Release(&codes);
    PyObject *capsule = PyCapsule_New(words, WORDS_CAPSULE, words_capsule_destructor);
    if (capsule == NULL) free_words(words);
    return capsule;
fail:
    if (letters.obj != NULL) PyBuffer_Release(&letters);
    if (codes.obj != NULL) PyBuffer_Release(&codes);
    free_words(words);
    return NULL;
}

/* ------------------------------------------------------------------------- beam search */

#define MEMO 4 /* LM answers a node remembers */

typedef struct {
    int32_t parent, token, size;
    double score, weighted, bonus; /* log P_lm, lm_weight * that, insertion_bonus * size */
    uint64_t word_hash; /* the hash of the letters since the last non-letter (WORD_START: none) */
    int32_t unknown;    /* the words before those letters missing from the word list */
    double penalized;   /* word_penalty * unknown */
    int32_t state[MAX_CONTEXT];    /* the last context_length tokens (fewer near the start) */
    int32_t state_length;
    int32_t chain, chain_length; /* the node's levels in Trie.levels; chain -1: not found yet */
    int32_t memo_tokens[MEMO];   /* the last tokens asked about (-1: none) and their answers */
    double memo_log_probs[MEMO];
    int32_t memo_next;
} Node;

typedef struct { /* a context of a chain: its entries in CompiledLM.following, and their total */
    int64_t start, end;
    double total;
} Level;

typedef struct {
    int32_t node; /* -1: a prefix not kept before (from_node + token) */
    double blank, label, rank;
    int32_t from_node, token;
    double score;
} Entry;

typedef struct {
    Node *nodes;
    Py_ssize_t count, capacity;
    int64_t *child_keys; /* node * classes + token, -1 for a free slot */
    int32_t *child_nodes;
    uint64_t child_mask;
    Py_ssize_t child_count;
    int32_t *beam_entry; /* per node: -2 not a beam this frame, -1 a beam not met yet, else entry */
    Level *levels;       /* the nodes' chains */
    Py_ssize_t level_count, level_capacity;
} Trie;

static uint64_t child_slot(int64_t key, uint64_t mask) { return mixed((uint64_t)key) & mask; }

static int32_t find_child(const Trie *trie, int64_t key) {
    for (uint64_t slot = child_slot(key, trie->child_mask);; slot = (slot + 1) & trie->child_mask) {
        if (trie->child_keys[slot] == key) return trie->child_nodes[slot];
        if (trie->child_keys[slot] < 0) return -1;
    }
}

static int put_child(Trie *trie, int64_t key, int32_t node) {
    if (2 * (uint64_t)(trie->child_count + 1) > trie->child_mask + 1) {
        uint64_t size = 2 * (trie->child_mask + 1);
        int64_t *keys = malloc(size * sizeof *keys);
        int32_t *nodes = malloc(size * sizeof *nodes);
        if (keys == NULL || nodes == NULL) {
            free(keys);
            free(nodes);
            return -1;
        }
        memset(keys, 0xff, size * sizeof *keys);
        for (uint64_t i = 0; i <= trie->child_mask; i++) {
            if (trie->child_keys[i] < 0) continue;
            uint64_t slot = child_slot(trie->child_keys[i], size - 1);
            while (keys[slot] >= 0) slot = (slot + 1) & (size - 1);
            keys[slot] = trie->child_keys[i];
            nodes[slot] = trie->child_nodes[i];
        }
        free(trie->child_keys);
        free(trie->child_nodes);
        trie->child_keys = keys;
        trie->child_nodes = nodes;
        trie->child_mask = size - 1;
    }
    uint64_t slot = child_slot(key, trie->child_mask);
    while (trie->child_keys[slot] >= 0) slot = (slot + 1) & trie->child_mask;
    trie->child_keys[slot] = key;
    trie->child_nodes[slot] = node;
    trie->child_count++;
    return 0;
}

static Node *new_node(Trie *trie) {
    if (trie->count == trie->capacity) {
        Py_ssize_t capacity = trie->capacity * 2;
        Node *nodes = realloc(trie->nodes, capacity * sizeof *nodes);
        int32_t *marks = realloc(trie->beam_entry, capacity * sizeof *marks);
        if (nodes != NULL) trie->nodes = nodes;
        if (marks != NULL) trie->beam_entry = marks;
        if (nodes == NULL || marks == NULL) return NULL;
        trie->capacity = capacity;
    }
    trie->beam_entry[trie->count] = -2;
    return &trie->nodes[trie->count++];
}

static void free_trie(Trie *trie) {
    free(trie->nodes);
    free(trie->child_keys);
    free(trie->child_nodes);
    free(trie->beam_entry);
    free(trie->levels);
}

/* A new node: its chain not found yet, no LM answers remembered. */
static void forget_answers(Node *node) {
    node->chain = -1;
    node->chain_length = 0;
    node->memo_next = 0;
    for (int i = 0; i < MEMO; i++) node->memo_tokens[i] = -1;
}

/* The character codes an LM state of tokens is looked up by (CharNGramLM._chain): the tokens'
 * characters (special tokens dropped), after a line start when the state is shorter than the
 * LM's context; how many (at most MAX_CONTEXT + 1). */
static int state_history(const CompiledLM *lm, const int32_t *state, int state_length,
                         int32_t *history) {
    const int32_t *codes = lm->token_codes.buf;
    Py_ssize_t known = lm->token_codes.shape[0];
    int length = 0;
    if (state_length < lm->context_length) history[length++] = lm->line_start;
    for (int i = 0; i < state_length; i++) {
        int32_t token = state[i];
        int32_t code = token >= 0 && token < known ? codes[token] : 0;
        if (code > 0) history[length++] = code;
    }
    return length;
}

/* The contexts a history is interpolated from, shortest first, into levels (room for
 * MAX_CONTEXT + 1): its suffixes of up to context_length characters, as long as they were
 * seen (CharNGramLM._suffix_tables); how many. */
static int context_chain(const CompiledLM *lm, const int32_t *history, int length,
                         Level *levels) {
    const int64_t *starts = lm->starts.buf, *totals = lm->totals.buf;
    int first = length > lm->context_length ? length - lm->context_length : 0;
    uint64_t key = 0, scale = 1;
    int count = 0;
    for (int i = length;; i--) { /* the suffix history[i:], shortest first */
        if (i < length) {
            key += (uint64_t)history[i] * scale;
            scale *= lm->base;
        }
        int32_t context = find_context(lm, key);
        if (context < 0) break; /* a longer context containing an unseen one is unseen too */
        levels[count++] = (Level){starts[context], starts[context + 1], (double)totals[context]};
        if (i == first) break;
    }
    return count;
}

/* log P(character) interpolated over a chain of contexts, from the uniform distribution up
 * (language_model._interpolated_log_prob). */
static double interpolated_log_prob(const CompiledLM *lm, const Level *levels, int count,
                                    int32_t character) {
    double probability = lm->uniform;
    for (int level = 0; level < count; level++) {
        const Level *context = &levels[level];
        int64_t found = 0;
        for (int64_t j = context->start; j < context->end; j++)
            if (lm->entries[j].character == character) {
                found = lm->entries[j].count;
                break;
            }
        double discounted = (double)found - lm->discount;
        double mass = lm->discount * (double)(context->end - context->start);
        probability = ((discounted > 0 ? discounted : 0.0) + mass * probability) / context->total;
    }
    return log(probability);
}

/* Find the contexts a node's state is interpolated from (its chain, kept in the trie's
 * levels). -1 without memory. */
static int find_chain(const CompiledLM *lm, Trie *trie, Node *node) {
    int32_t history[MAX_CONTEXT + 1];
    int length = state_history(lm, node->state, node->state_length, history);
    if (trie->level_count + MAX_CONTEXT + 1 > trie->level_capacity) {
        Py_ssize_t capacity = 2 * trie->level_capacity + MAX_CONTEXT + 1;
        Level *levels = realloc(trie->levels, capacity * sizeof *levels);
        if (levels == NULL) return -1;
        trie->levels = levels;
        trie->level_capacity = capacity;
    }
    node->chain = (int32_t)trie->level_count;
    node->chain_length = context_chain(lm, history, length, &trie->levels[trie->level_count]);
    trie->level_count += node->chain_length;
    return 0;
}

/* log P(token | the node's state), or NaN without memory (never an answer otherwise). */
static double lm_log_prob(const CompiledLM *lm, Trie *trie, Node *node, int32_t token) {
    for (int i = 0; i < MEMO; i++)
        if (node->memo_tokens[i] == token) return node->memo_log_probs[i];
    const int32_t *codes = lm->token_codes.buf;
    int32_t code = token >= 0 && token < lm->token_codes.shape[0] ? codes[token] : 0;
    if (code <= 0) return -INFINITY; /* a special token: not a character the LM knows */
    if (node->chain < 0 && find_chain(lm, trie, node) < 0) return NAN;
    double answer =
        interpolated_log_prob(lm, &trie->levels[node->chain], node->chain_length, code - 1);
    node->memo_tokens[node->memo_next] = token;
    node->memo_log_probs[node->memo_next] = answer;
    node->memo_next = (node->memo_next + 1) % MEMO;
    return answer;
}

static double logaddexp(double a, double b) { /* decoding._logaddexp */
    if (a == -INFINITY) return b;
    if (b == -INFINITY) return a;
    return (a >= b ? a : b) + log1p(exp(-fabs(a - b)));
}

static double merged(double y, double x) { /* the inline merge: y is what was there */
    if (y != -INFINITY && x != -INFINITY) return (y > x ? y : x) + log1p(exp(-fabs(y - x)));
    return x == -INFINITY ? y : x;
}

static double total_of(double b, double lab) { /* the inline logaddexp of a beam's two parts */
    if (b == -INFINITY) return lab;
    if (lab == -INFINITY) return b;
    return (b > lab ? b : lab) + log1p(exp(-fabs(b - lab)));
}

/* The entries by_rank compares: a static, as qsort passes no context; beam_search holds the
 * GIL throughout, so no two calls sort at once. */
/* by_rank's entries, one per thread: searches run without the GIL, several at once. */
static _Thread_local const Entry *sort_entries;

static int by_rank(const void *left, const void *right) { /* best first; ties: order met */
    int32_t i = *(const int32_t *)left, j = *(const int32_t *)right;
    double a = sort_entries[i].rank, b = sort_entries[j].rank;
    if (a > b) return -1;
    if (a < b) return 1;
    return (i > j) - (i < j);
}

/* beam_search(blank_column f64[T], candidate_starts i64[T+1], candidate_tokens i32,
 *             candidate_values f64, classes, beam_width, lm capsule or None, lm_weight,
 *             insertion_bonus, rank_gap or None, floor_margin) -> (ids list, confidence) */
/* The token ids of a node's prefix, first to last, as a new list (NULL: out of memory). */
static PyObject *ids_of(const Trie *trie, int32_t last) {
    Py_ssize_t length = 0;
    for (int32_t node = last; node > 0; node = trie->nodes[node].parent) length++;
    PyObject *ids = PyList_New(length);
    if (ids == NULL) return NULL;
    for (int32_t node = last; node > 0; node = trie->nodes[node].parent) {
        PyObject *token = PyLong_FromLong(trie->nodes[node].token);
        if (token == NULL) {
            Py_DECREF(ids);
            return NULL;
        }
        PyList_SET_ITEM(ids, --length, token);
    }
    return ids;
}

/* The missing words of a node's prefix once it is extended by a token with word code
 * `code` (0: not a letter): a word ends when a non-letter follows its letters. */
static int32_t unknown_after(const CompiledWords *words, const Node *node, int32_t code) {
    if (words == NULL || code > 0 || node->word_hash == WORD_START) return node->unknown;
    return node->unknown + !has_word(words, node->word_hash);
}

/* A token's lower-case letter for the word list, 0 for no letter (or no list). */
static int32_t word_code(const CompiledWords *words, int32_t token) {
    return words != NULL && token >= 0 && token < words->known ? words->codes[token] : 0;
}

static PyObject *beam_search(PyObject *self, PyObject *args) {
    PyObject *blank_object, *starts_object, *tokens_object, *values_object, *lm_object, *gap_object,
        *words_object;
    Py_ssize_t classes;
    int beam_width;
    double lm_weight, insertion_bonus, floor_margin, word_penalty;
    if (!PyArg_ParseTuple(args, "OOOOniOddOdOd", &blank_object, &starts_object, &tokens_object,
                          &values_object, &classes, &beam_width, &lm_object, &lm_weight,
                          &insertion_bonus, &gap_object, &floor_margin, &words_object,
                          &word_penalty))
        return NULL;
    CompiledLM *lm = NULL;
    if (lm_object != Py_None && (lm = PyCapsule_GetPointer(lm_object, LM_CAPSULE)) == NULL)
        return NULL;
    CompiledWords *words = NULL;
    if (words_object != Py_None &&
        (words = PyCapsule_GetPointer(words_object, WORDS_CAPSULE)) == NULL)
        return NULL;
    int has_gap = gap_object != Py_None;
    double rank_gap = has_gap ? PyFloat_AsDouble(gap_object) : 0.0;
    if (has_gap && rank_gap == -1.0 && PyErr_Occurred()) return NULL;
    if (beam_width < 1 || classes < 1) {
        PyErr_SetString(PyExc_ValueError, "beam_width and classes must be positive");
        return NULL;
    }
    Py_buffer blank_view = {0}, starts_view = {0}, tokens_view = {0}, values_view = {0};
    Trie trie = {0};
    Entry *entries = NULL;
    int32_t *order = NULL, *beam_nodes = NULL;
    double *p_blanks = NULL, *p_labels = NULL;
    PyObject *result = NULL;
    if (get_view(blank_object, &blank_view, 8, "blank_column") < 0 ||
        get_view(starts_object, &starts_view, 8, "candidate_starts") < 0 ||
        get_view(tokens_object, &tokens_view, 4, "candidate_tokens") < 0 ||
        get_view(values_object, &values_view, 8, "candidate_values") < 0)
        goto done;
    Py_ssize_t frames = blank_view.shape[0];
    if (starts_view.shape[0] != frames + 1 || tokens_view.shape[0] != values_view.shape[0]) {
        PyErr_SetString(PyExc_ValueError, "inconsistent candidate arrays");
        goto done;
    }
    const double *blank_column = blank_view.buf, *values = values_view.buf;
    const int64_t *starts = starts_view.buf;
    const int32_t *tokens = tokens_view.buf;
    Py_ssize_t most_candidates = 0;
    for (Py_ssize_t t = 0; t < frames; t++) {
        if (starts[t + 1] - starts[t] > most_candidates) most_candidates = starts[t + 1] - starts[t];
        if (starts[t] < 0 || starts[t + 1] < starts[t] || starts[t + 1] > tokens_view.shape[0]) {
            PyErr_SetString(PyExc_ValueError, "candidate_starts out of range");
            goto done;
        }
    }
    Py_ssize_t most_entries = (Py_ssize_t)beam_width * (most_candidates + 1);
    trie.capacity = 256;
    trie.nodes = malloc(trie.capacity * sizeof *trie.nodes);
    trie.beam_entry = malloc(trie.capacity * sizeof *trie.beam_entry);
    trie.child_mask = 255;
    trie.child_keys = malloc(256 * sizeof *trie.child_keys);
    trie.child_nodes = malloc(256 * sizeof *trie.child_nodes);
    entries = malloc((most_entries + 1) * sizeof *entries);
    order = malloc((most_entries + 1) * sizeof *order);
    beam_nodes = malloc(beam_width * sizeof *beam_nodes);
    p_blanks = malloc(beam_width * sizeof *p_blanks);
    p_labels = malloc(beam_width * sizeof *p_labels);
    if (!trie.nodes || !trie.beam_entry || !trie.child_keys || !trie.child_nodes || !entries ||
        !order || !beam_nodes || !p_blanks || !p_labels) {
        PyErr_NoMemory();
        goto done;
    }
    memset(trie.child_keys, 0xff, 256 * sizeof *trie.child_keys);
    int context = lm != NULL ? lm->context_length : -1;
    Node *root = new_node(&trie);
    *root = (Node){.parent = -1, .token = -1, .size = 0, .score = 0.0, .weighted = lm_weight * 0.0,
                   .bonus = insertion_bonus * 0, .state_length = 0, .word_hash = WORD_START,
                   .unknown = 0, .penalized = word_penalty * 0};
    forget_answers(root);
    int beams = 1;
    beam_nodes[0] = 0;
    p_blanks[0] = 0.0;
    p_labels[0] = -INFINITY;
    int labels_dead = 1;
    int lm_bounded = lm_weight > 0 || lm == NULL;
    double lowest = -INFINITY, leading = 0.0;
    /* The search reads only this call's arrays and the capsules' tables: other threads (a
     * server's second recognition, its requests) run while it does. */
    int out_of_memory = 0, chosen = 0;
    double confidence = 1.0;
    PyThreadState *_save;
    Py_UNBLOCK_THREADS
    for (Py_ssize_t t = 0; t < frames; t++) {
        double p_blank_frame = blank_column[t];
        int64_t first = starts[t], last = starts[t + 1];
        if (first == last) { /* a blank-only frame: the ranking cannot change */
            lowest += p_blank_frame;
            leading += p_blank_frame;
            if (labels_dead) {
                for (int i = 0; i < beams; i++) p_blanks[i] = p_blanks[i] + p_blank_frame;
            } else {
                for (int i = 0; i < beams; i++) {
                    p_blanks[i] = total_of(p_blanks[i], p_labels[i]) + p_blank_frame;
                    p_labels[i] = -INFINITY;
                }
                labels_dead = 1;
            }
            continue;
        }
        Py_ssize_t met = 0;
        for (int i = 0; i < beams; i++) trie.beam_entry[beam_nodes[i]] = -1;
        double floor_rank = lowest + p_blank_frame;
        if (has_gap && lm_bounded) {
            double other = leading + p_blank_frame - rank_gap;
            if (other > floor_rank) floor_rank = other;
        }
        floor_rank -= floor_margin * (1.0 + fabs(floor_rank));
        for (int i = 0; i < beams; i++) {
            int32_t node = beam_nodes[i];
            double b = p_blanks[i], lab = p_labels[i];
            double p_total = total_of(b, lab);
            double x = p_total + p_blank_frame;
            int32_t stay = trie.beam_entry[node];
            if (stay < 0) {
                stay = trie.beam_entry[node] = (int32_t)met;
                entries[met++] = (Entry){node, x, -INFINITY, -INFINITY, -1, -1, 0.0};
            } else {
                entries[stay].blank = merged(entries[stay].blank, x);
            }
            int32_t repeat = trie.nodes[node].token;
            int64_t key = (int64_t)node * classes;
            for (int64_t c = first; c < last; c++) {
                int32_t token = tokens[c];
                double p = values[c];
                if (token == repeat) {
                    entries[stay].label = logaddexp(entries[stay].label, lab + p);
                    x = b + p;
                } else {
                    x = p_total + p;
                }
                int32_t child = find_child(&trie, key + token);
                if (child < 0) {
                    Node *info = &trie.nodes[node];
                    double score;
                    if (lm == NULL) {
                        score = info->score + 0.0;
                    } else if (x + info->weighted + insertion_bonus * (info->size + 1) -
                                   info->penalized <
                               floor_rank) {
                        continue;
                    } else {
                        double answer = lm_log_prob(lm, &trie, info, token);
                        if (isnan(answer)) {
                            out_of_memory = 1;
                            goto searched;
                        }
                        score = info->score + answer;
                    }
                    int32_t unknown = unknown_after(words, info, word_code(words, token));
                    double rank = x + lm_weight * score + insertion_bonus * (info->size + 1) -
                                  word_penalty * unknown;
                    if (!(rank < floor_rank))
                        entries[met++] = (Entry){-1, -INFINITY, x, rank, node, token, score};
                    continue;
                }
                int32_t other = trie.beam_entry[child];
                if (other == -2) { /* not a beam: met once */
                    const Node *grown = &trie.nodes[child];
                    double rank = x + grown->weighted + grown->bonus - grown->penalized;
                    if (!(rank < floor_rank))
                        entries[met++] = (Entry){child, -INFINITY, x, rank, -1, -1, 0.0};
                    continue;
                }
                if (other == -1) {
                    trie.beam_entry[child] = (int32_t)met;
                    entries[met++] = (Entry){child, -INFINITY, x, -INFINITY, -1, -1, 0.0};
                } else {
                    entries[other].label = merged(entries[other].label, x);
                }
            }
        }
        for (int i = 0; i < beams; i++) {
            int32_t entry = trie.beam_entry[beam_nodes[i]];
            if (entry >= 0) {
                const Node *info = &trie.nodes[entries[entry].node];
                double rank = total_of(entries[entry].blank, entries[entry].label);
                entries[entry].rank = rank + info->weighted + info->bonus - info->penalized;
            }
            trie.beam_entry[beam_nodes[i]] = -2;
        }
        /* Only the prefixes within rank_gap of the best can be kept: the rest are not sorted
         * (the same beams as sorting all of them and cutting after: the order is total). */
        Py_ssize_t ranked = 0;
        if (has_gap) {
            leading = -INFINITY;
            for (Py_ssize_t i = 0; i < met; i++)
                if (entries[i].rank > leading) leading = entries[i].rank;
            double cut = leading - rank_gap;
            for (Py_ssize_t i = 0; i < met; i++)
                if (!(entries[i].rank < cut)) order[ranked++] = (int32_t)i;
        } else {
            for (Py_ssize_t i = 0; i < met; i++) order[ranked++] = (int32_t)i;
        }
        sort_entries = entries;
        qsort(order, ranked, sizeof *order, by_rank);
        int kept = ranked < beam_width ? (int)ranked : beam_width;
        lowest = lm_bounded && kept == beam_width ? entries[order[kept - 1]].rank : -INFINITY;
        for (int i = 0; i < kept; i++) {
            Entry *entry = &entries[order[i]];
            if (entry->node < 0) { /* a new prefix kept: now a node */
                Node *made = new_node(&trie);
                if (made == NULL) {
                    out_of_memory = 1;
                    goto searched;
                }
                const Node *from = &trie.nodes[entry->from_node];
                made->parent = entry->from_node;
                made->token = entry->token;
                made->size = from->size + 1;
                made->score = entry->score;
                made->weighted = lm_weight * entry->score;
                made->bonus = insertion_bonus * made->size;
                int32_t code = word_code(words, entry->token);
                made->unknown = unknown_after(words, from, code);
                made->penalized = word_penalty * made->unknown;
                made->word_hash = code > 0 ? word_step(from->word_hash, code) : WORD_START;
                forget_answers(made);
                int length = 0;
                if (context > 0) {
                    int skip = from->state_length + 1 > context ? from->state_length + 1 - context : 0;
                    for (int s = skip; s < from->state_length; s++) made->state[length++] = from->state[s];
                    made->state[length++] = entry->token;
                }
                made->state_length = length;
                entry->node = (int32_t)(trie.count - 1);
                if (put_child(&trie, (int64_t)entry->from_node * classes + entry->token, entry->node) < 0) {
                    out_of_memory = 1;
                    goto searched;
                }
            }
            beam_nodes[i] = entry->node;
            p_blanks[i] = entry->blank;
            p_labels[i] = entry->label;
        }
        beams = kept;
        labels_dead = 0;
    }
    /* decoding.best_by_words: the final beam best once its last word counts */
    double best_score = -INFINITY;
    for (int i = 0; words != NULL && i < beams; i++) {
        const Node *node = &trie.nodes[beam_nodes[i]];
        double rank =
            total_of(p_blanks[i], p_labels[i]) + node->weighted + node->bonus - node->penalized;
        if (!(rank > best_score)) continue; /* a penalty only lowers a rank */
        int32_t last_unknown = unknown_after(words, node, 0) - node->unknown;
        double score = rank - word_penalty * (double)last_unknown;
        if (score > best_score) {
            chosen = i;
            best_score = score;
        }
    }
    confidence = frames ? exp(logaddexp(p_blanks[chosen], p_labels[chosen]) / (double)frames) : 1.0;
searched:
    Py_BLOCK_THREADS
    if (out_of_memory) {
        PyErr_NoMemory();
        goto done;
    }
    PyObject *ids = ids_of(&trie, beam_nodes[chosen]);
    if (ids != NULL) result = Py_BuildValue("(Nd)", ids, confidence);
done:
    if (blank_view.obj) PyBuffer_Release(&blank_view);
    if (starts_view.obj) PyBuffer_Release(&starts_view);
    if (tokens_view.obj) PyBuffer_Release(&tokens_view);
    if (values_view.obj) PyBuffer_Release(&values_view);
    free_trie(&trie);
    free(entries);
    free(order);
    free(beam_nodes);
    free(p_blanks);
    free(p_labels);
    return result;
}

/* log_likelihood(lm, ids int32) -> the sum over the ids of log P(id | the ids before it), each
 * asked of the LM with the last context_length ids as beam search asks it of a prefix, in
 * order from 0.0 (decoding.log_likelihood's Python loop, to the bit); -inf for an id that is
 * not one of the LM's characters. What a language's identifier scores a line's reading by. */
static PyObject *log_likelihood(PyObject *self, PyObject *args) {
    PyObject *capsule, *ids_object;
    if (!PyArg_ParseTuple(args, "OO", &capsule, &ids_object)) return NULL;
    const CompiledLM *lm = PyCapsule_GetPointer(capsule, LM_CAPSULE);
    if (lm == NULL) return NULL;
    Py_buffer view = {0};
    if (get_view(ids_object, &view, 4, "ids") < 0) {
        if (view.obj != NULL) PyBuffer_Release(&view);
        return NULL;
    }
    const int32_t *ids = view.buf, *codes = lm->token_codes.buf;
    Py_ssize_t known = lm->token_codes.shape[0];
    int32_t history[MAX_CONTEXT + 1];
    Level levels[MAX_CONTEXT + 1];
    double total = 0.0;
    for (Py_ssize_t i = 0; i < view.shape[0]; i++) {
        int32_t code = ids[i] >= 0 && ids[i] < known ? codes[ids[i]] : 0;
        if (code <= 0) {
            total += -INFINITY;
            continue;
        }
        int state_length = i < lm->context_length ? (int)i : lm->context_length;
        int length = state_history(lm, ids + i - state_length, state_length, history);
        total += interpolated_log_prob(lm, levels, context_chain(lm, history, length, levels),
                                       code - 1);
    }
    PyBuffer_Release(&view);
    return PyFloat_FromDouble(total);
}

static PyMethodDef methods[] = {
    {"lm_tables", lm_tables, METH_VARARGS, "Build a language model's tables for beam_search."},
    {"word_tables", word_tables, METH_VARARGS, "Build a word list's table for beam_search."},
    {"beam_search", beam_search, METH_VARARGS, "CTC prefix beam search of one item."},
    {"log_likelihood", log_likelihood, METH_VARARGS,
     "Sum of log P(id | the ids before it) of a line's ids under a language model."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_ctc_beam",
                                    "Compiled CTC beam search (see quill.models.decoding).", -1,
                                    methods};

PyMODINIT_FUNC PyInit__ctc_beam(void) {
    PyObject *created = PyModule_Create(&module);
    if (created != NULL && PyModule_AddIntConstant(created, "ABI_VERSION", ABI_VERSION) < 0) {
        Py_DECREF(created);
        return NULL;
    }
    return created;
}
