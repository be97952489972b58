"""Mail: the sender daemon, SMTP client and sink, rendering, digest composition, previews."""
