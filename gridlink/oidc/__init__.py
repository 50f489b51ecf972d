"""Sign-in with OpenID Connect providers: their configuration, discovery, keys and ID tokens."""
