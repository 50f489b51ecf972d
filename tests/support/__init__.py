"""What tests share: clusters and their ports, servers, waiting, faults, the API client.

A test module imports from here, never from another test module.
"""
