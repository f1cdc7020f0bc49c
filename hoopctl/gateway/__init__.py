"""The PostgreSQL L7 gateway: wire codec, server, auth, policy, masking, recording."""
