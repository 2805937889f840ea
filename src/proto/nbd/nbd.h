/* The NBD head: volumes over the NBD protocol (nbd://HOST:PORT/NAME). */
#ifndef PL_NBD_H
#define PL_NBD_H

#include "plenum/store.h"

struct nbd_opts {
    const char *host;
    int port;
    size_t write_cache; /* bytes of writes answered before they are stored; 0: default */
};

struct nbd_server;
int nbd_start(struct pl_store *st, const struct nbd_opts *o, struct nbd_server **ret) PL_WUR;
int nbd_port(const struct nbd_server *s);
void nbd_stop(struct nbd_server *s);

#endif
