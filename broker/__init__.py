"""The broker process: validates, applies tenancy, caches, routes and answers chat requests.

Kept thin on purpose: importing ``broker`` loads nothing; import the room you need
(``broker.service``, ``broker.cache``, ``broker.upstream``, ``broker.tenancy``, ``broker.batch``).
"""
