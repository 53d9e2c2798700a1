"""fabric-objectstore: an S3-compatible object store.

What it speaks (see README.rst for the table of operations): SigV4 in the
Authorization header, in presigned query strings and in aws-chunked streaming
uploads; buckets owned by projects; objects, copies, multi-object deletes and
multipart uploads with S3's ETags, checksums and XML errors.

Modules: ``sigv4`` (signatures), ``chunked`` (the aws-chunked body decoder),
``checksums``, ``storage`` (bytes in files, written atomically), ``metadata``
(rows in the shared database), ``auth`` (who is asking), ``access`` (who may),
``documents`` (XML in and out), ``errors``, the handlers ``buckets``,
``objects``, ``listing`` and ``multipart``, ``app`` (routing) and ``manager``
(the worker).
"""
