"""The admission wing: requests wait for capacity (the broker's, their tenant's, a
deployment's) in priority classes with fair shares, and brokers share each deployment's
provider limits (``settings``, ``classes``, ``pool``, ``queue``, ``gate``, ``limits``,
``learn``, ``admit``, ``allocator``, ``stats``, ``probes``).

Nothing is imported here: reading the configuration loads ``settings`` alone.
"""
