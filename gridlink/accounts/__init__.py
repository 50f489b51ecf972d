"""Account machinery: password hashing, login tokens, throttles and the rate limiter under them."""
