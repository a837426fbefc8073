"""The admission wing: requests wait for capacity (the broker's, their tenant's, a
deployment's) in priority classes with fair shares, and brokers share each deployment's
provider limits (``settings``, ``classes``, ``pool``, ``queue``, ``gate``, ``limits``,
``learn``, ``admit``, ``split``, ``allocator``, ``stats``, ``probes``, ``waits``).

Nothing is imported here: reading the configuration loads ``settings`` alone.
"""
