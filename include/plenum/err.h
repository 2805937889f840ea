/* Plenum error codes.
 *
 * Every fallible function returns an int: >= 0 is success, < 0 is one of the
 * codes below. System errors keep their errno value (negated) so they can be
 * passed through unchanged; Plenum's own conditions live at -1000 and below.
 */
#ifndef PLENUM_ERR_H
#define PLENUM_ERR_H

#include <errno.h>

#define PL_WUR __attribute__((warn_unused_result))

/* X(name, value, message) */
#define PL_ERRORS(X)                                                          \
    X(PL_OK, 0, "success")                                                    \
    X(PL_EPERM, -EPERM, "operation not permitted")                            \
    X(PL_ENOENT, -ENOENT, "no such file, object or bucket")                   \
    X(PL_EIO, -EIO, "input/output error")                                     \
    X(PL_ENOMEM, -ENOMEM, "out of memory")                                    \
    X(PL_EACCES, -EACCES, "permission denied")                                \
    X(PL_EBUSY, -EBUSY, "resource busy")                                      \
    X(PL_EEXIST, -EEXIST, "already exists")                                   \
    X(PL_EXDEV, -EXDEV, "cross-device link")                                  \
    X(PL_ENOTDIR, -ENOTDIR, "not a directory")                                \
    X(PL_EISDIR, -EISDIR, "is a directory")                                   \
    X(PL_EINVAL, -EINVAL, "invalid argument")                                 \
    X(PL_EFBIG, -EFBIG, "file too large")                                     \
    X(PL_ENOSPC, -ENOSPC, "no space left on device")                          \
    X(PL_EROFS, -EROFS, "read-only (snapshot or WORM)")                       \
    X(PL_EMLINK, -EMLINK, "too many links")                                   \
    X(PL_ENAMETOOLONG, -ENAMETOOLONG, "name too long")                        \
    X(PL_ENOTEMPTY, -ENOTEMPTY, "directory or bucket not empty")              \
    X(PL_ELOOP, -ELOOP, "too many levels of symbolic links")                  \
    X(PL_ENODATA, -ENODATA, "no such attribute")                              \
    X(PL_ERANGE, -ERANGE, "result too large")                                 \
    X(PL_EAGAIN, -EAGAIN, "try again")                                        \
    X(PL_ECONNREFUSED, -ECONNREFUSED, "connection refused")                   \
    X(PL_ECORRUPT, -1001, "stored data is corrupt (checksum mismatch)")       \
    X(PL_ENOTPLENUM, -1002, "not a plenum data directory")                    \
    X(PL_ELOCKED, -1003, "data directory is in use by another process")       \
    X(PL_EPROTO, -1004, "protocol error")                                     \
    X(PL_EVERSION, -1005, "unsupported on-disk format version")               \
    X(PL_ENOSNAP, -1006, "no such snapshot")                                  \
    X(PL_ENOBUCKET, -1007, "no such bucket")                                  \
    X(PL_ECONFLICT, -1008, "key conflicts with an existing file or directory")\
    X(PL_ESHUTDOWN, -1009, "shutting down")                                   \
    X(PL_EINTERNAL, -1010, "internal error")                                  \
    X(PL_EDIGEST, -1011, "content digest does not match the data received")   \
    X(PL_ENOUPLOAD, -1012, "no such multipart upload")                         \
    X(PL_EBADPART, -1013, "a listed part was not uploaded or its ETag differs") \
    X(PL_EPARTORDER, -1014, "parts are not in ascending order")               \
    X(PL_ETOOSMALL, -1015, "a part other than the last is under 5 MiB")      \
    X(PL_ENOVERSION, -1016, "no such object version")                         \
    X(PL_ENODEVS, -1017, "too few working capacity devices for the stripe width") \
    X(PL_ENOTOPIC, -1018, "no such topic")                                    \
    X(PL_ESIZE, -1019, "it exists with another size")

enum pl_err {
#define PL_ERR_ENUM(name, value, msg) name = (value),
    PL_ERRORS(PL_ERR_ENUM)
#undef PL_ERR_ENUM
};

/* Human message for an error code; never NULL, static storage. */
const char *pl_strerror(int err);
/* Symbolic name ("PL_ENOENT"); never NULL, static storage. */
const char *pl_errname(int err);

#endif
