/*
 * YAML documents (ydoc.h): loading, node access, and messages with file and line.
 */
#include "core/ydoc.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static int load(struct ydoc *d, yaml_parser_t *parser, struct err *e)
{
    d->e = e;
    if (!yaml_parser_load(parser, &d->doc))
        return err_set(e, E_INVALID, "%s:%zu: %s", d->name, parser->problem_mark.line + 1,
                       parser->problem ? parser->problem : "invalid YAML");
    d->loaded = true;
    return 0;
}

int ydoc_load_file(struct ydoc *d, const char *path, struct err *e)
{
    memset(d, 0, sizeof *d);
    d->name = path;
    FILE *f = fopen(path, "rb");
    if (!f)
        return err_set(e, E_IO, "cannot open %s: %s", path, strerror(errno));
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_file(&parser, f);
    int rc = load(d, &parser, e);
    yaml_parser_delete(&parser);
    fclose(f);
    return rc;
}

int ydoc_load_text(struct ydoc *d, const char *name, const char *text, struct err *e)
{
    memset(d, 0, sizeof *d);
    d->name = name;
    yaml_parser_t parser;
    yaml_parser_initialize(&parser);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, strlen(text));
    int rc = load(d, &parser, e);
    yaml_parser_delete(&parser);
    return rc;
}

void ydoc_release(struct ydoc *d)
{
    if (d->loaded)
        yaml_document_delete(&d->doc);
    d->loaded = false;
}

yaml_node_t *ydoc_root(struct ydoc *d)
{
    yaml_node_t *root = yaml_document_get_root_node(&d->doc);
    if (!root || (root->type == YAML_SCALAR_NODE && root->data.scalar.length == 0))
        return NULL;
    return root;
}

yaml_node_t *ydoc_node(struct ydoc *d, int id)
{
    return yaml_document_get_node(&d->doc, id);
}

yaml_node_t *ydoc_map_get(struct ydoc *d, const yaml_node_t *map, const char *key)
{
    yaml_node_t *v = NULL;
    if (!map || map->type != YAML_MAPPING_NODE)
        return NULL;
    for (yaml_node_pair_t *pr = map->data.mapping.pairs.start; pr < map->data.mapping.pairs.top;
         pr++) {
        const char *k = ydoc_text(ydoc_node(d, pr->key));
        if (k && strcmp(k, key) == 0)
            v = ydoc_node(d, pr->value);
    }
    return v;
}

const char *ydoc_text(const yaml_node_t *n)
{
    return n && n->type == YAML_SCALAR_NODE ? (const char *)n->data.scalar.value : NULL;
}

int ydoc_fail(struct ydoc *d, const yaml_node_t *at, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(d->e, E_INVALID, "%s:%zu: %s", d->name, at ? at->start_mark.line + 1 : 0, msg);
}
