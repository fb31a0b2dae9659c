/*
 * A YAML document read whole (libyaml's document API), and messages that name the file and line
 * of the node at fault — what alert rule files, the `alerting:` section and the job definitions
 * of the config are read with.
 */
#ifndef OPSDB_CORE_YDOC_H
#define OPSDB_CORE_YDOC_H

#include "core/core.h"

#include <yaml.h>

struct ydoc {
    const char *name; /* the file, or what messages call a text */
    yaml_document_t doc;
    bool loaded;
    struct err *e; /* where ydoc_fail() writes */
};

/* Reads a file (E_IO when it cannot be opened) or a text; E_INVALID "name:line: why" for bad
 * YAML. d is released by ydoc_release() whatever the result. */
int ydoc_load_file(struct ydoc *d, const char *path, struct err *e);
int ydoc_load_text(struct ydoc *d, const char *name, const char *text, struct err *e);
void ydoc_release(struct ydoc *d);
/* The root node; NULL for an empty document. */
yaml_node_t *ydoc_root(struct ydoc *d);
yaml_node_t *ydoc_node(struct ydoc *d, int id);
/* The value of key in map (the last one when it is given twice); NULL when map is not a map or
 * has no such key. */
yaml_node_t *ydoc_map_get(struct ydoc *d, const yaml_node_t *map, const char *key);
/* A scalar's text; NULL for a map, a list or no node. */
const char *ydoc_text(const yaml_node_t *n);
/* Sets E_INVALID "name:line: message" (the line of at) and returns E_INVALID. */
int ydoc_fail(struct ydoc *d, const yaml_node_t *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
