/* S3 error codes with the HTTP status and message AWS uses. */
#ifndef PL_S3ERR_H
#define PL_S3ERR_H

/* X(enum, Code, status, message) */
#define S3_ERRORS(X)                                                                           \
    X(S3E_NONE, "", 200, "")                                                                   \
    X(S3E_ACCESS_DENIED, "AccessDenied", 403, "Access Denied")                                 \
    X(S3E_EXPIRED, "AccessDenied", 403, "Request has expired")                                 \
    X(S3E_INVALID_ACCESS_KEY, "InvalidAccessKeyId", 403,                                       \
      "The AWS Access Key Id you provided does not exist in our records.")                     \
    X(S3E_SIGNATURE, "SignatureDoesNotMatch", 403,                                             \
      "The request signature we calculated does not match the signature you provided. "        \
      "Check your key and signing method.")                                                    \
    X(S3E_SKEWED, "RequestTimeTooSkewed", 403,                                                 \
      "The difference between the request time and the current time is too large.")           \
    X(S3E_AUTH_HEADER, "AuthorizationHeaderMalformed", 400,                                    \
      "The authorization header is malformed.")                                                \
    X(S3E_SIGV2, "InvalidRequest", 400,                                                        \
      "The authorization mechanism you have provided is not supported. Please use "            \
      "AWS4-HMAC-SHA256.")                                                                     \
    X(S3E_NO_BUCKET, "NoSuchBucket", 404, "The specified bucket does not exist")               \
    X(S3E_NO_KEY, "NoSuchKey", 404, "The specified key does not exist.")                       \
    X(S3E_NO_VERSION, "NoSuchVersion", 404, "The specified version does not exist.")           \
    X(S3E_NO_UPLOAD, "NoSuchUpload", 404,                                                      \
      "The specified upload does not exist. The upload ID may be invalid, or the upload may "  \
      "have been aborted or completed.")                                                       \
    X(S3E_BUCKET_OWNED, "BucketAlreadyOwnedByYou", 409,                                        \
      "Your previous request to create the named bucket succeeded and you already own it.")    \
    X(S3E_BUCKET_NOT_EMPTY, "BucketNotEmpty", 409, "The bucket you tried to delete is not empty") \
    X(S3E_BAD_BUCKET_NAME, "InvalidBucketName", 400, "The specified bucket is not valid.")     \
    X(S3E_KEY_TOO_LONG, "KeyTooLongError", 400, "Your key is too long")                        \
    X(S3E_INVALID_ARGUMENT, "InvalidArgument", 400, "Invalid Argument")                        \
    X(S3E_INVALID_REQUEST, "InvalidRequest", 400, "Invalid Request")                           \
    X(S3E_KEY_CONFLICT, "InvalidRequest", 409,                                                 \
      "The key conflicts with an existing key: an object cannot also be a prefix of other "    \
      "keys (for example 'a' and 'a/b') in Plenum, because the bucket is also a file system.") \
    X(S3E_MALFORMED_XML, "MalformedXML", 400,                                                  \
      "The XML you provided was not well-formed or did not validate against our published "    \
      "schema")                                                                                \
    X(S3E_INVALID_RANGE, "InvalidRange", 416, "The requested range is not satisfiable")        \
    X(S3E_INVALID_PART_NUMBER, "InvalidPartNumber", 416,                                       \
      "The requested partnumber is not satisfiable")                                           \
    X(S3E_PRECONDITION, "PreconditionFailed", 412,                                             \
      "At least one of the pre-conditions you specified did not hold")                         \
    X(S3E_NOT_MODIFIED, "NotModified", 304, "Not Modified")                                    \
    X(S3E_METHOD, "MethodNotAllowed", 405,                                                     \
      "The specified method is not allowed against this resource.")                            \
    X(S3E_NOT_IMPLEMENTED, "NotImplemented", 501,                                              \
      "A header or query you provided implies functionality that is not implemented.")         \
    X(S3E_ENTITY_TOO_SMALL, "EntityTooSmall", 400,                                             \
      "Your proposed upload is smaller than the minimum allowed object size.")                 \
    X(S3E_INVALID_PART, "InvalidPart", 400,                                                    \
      "One or more of the specified parts could not be found. The part may not have been "     \
      "uploaded, or the specified entity tag may not match the part's entity tag.")            \
    X(S3E_INVALID_PART_ORDER, "InvalidPartOrder", 400,                                         \
      "The list of parts was not in ascending order. The parts list must be specified in "     \
      "order by part number.")                                                                 \
    X(S3E_BAD_DIGEST, "BadDigest", 400,                                                        \
      "The Content-MD5 or checksum value that you specified did not match what the server "    \
      "received.")                                                                             \
    X(S3E_INVALID_DIGEST, "InvalidDigest", 400, "The Content-MD5 you specified is not valid.") \
    X(S3E_SHA_MISMATCH, "XAmzContentSHA256Mismatch", 400,                                      \
      "The provided 'x-amz-content-sha256' header does not match what was computed.")          \
    X(S3E_INCOMPLETE_BODY, "IncompleteBody", 400,                                              \
      "You did not provide the number of bytes specified by the Content-Length HTTP header")   \
    X(S3E_MISSING_LENGTH, "MissingContentLength", 411,                                         \
      "You must provide the Content-Length HTTP header.")                                      \
    X(S3E_TOO_LARGE, "EntityTooLarge", 400,                                                    \
      "Your proposed upload exceeds the maximum allowed object size.")                         \
    X(S3E_NO_TAGS, "NoSuchTagSet", 404, "The TagSet does not exist")                           \
    X(S3E_INTERNAL, "InternalError", 500,                                                      \
      "We encountered an internal error. Please try again.")                                   \
    X(S3E_CORRUPT, "InternalError", 500,                                                       \
      "The stored data failed its integrity check; an operator should run plenum fsck.")       \
    X(S3E_NO_SPACE, "ServiceUnavailable", 503,                                                 \
      "The server is out of storage space. Please reduce your request rate or free space.")    \
    X(S3E_SLOW_DOWN, "SlowDown", 503, "Please reduce your request rate.")

enum s3_err {
#define S3_ERR_ENUM(e, code, status, msg) e,
    S3_ERRORS(S3_ERR_ENUM)
#undef S3_ERR_ENUM
};

#endif
