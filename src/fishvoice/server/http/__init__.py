"""What every API package shares at the HTTP edge: keys, reading bodies, field checks, error shapes,
streaming responses. Nothing here knows a route."""
