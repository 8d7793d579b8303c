"""The node's embedded SQLite store: schema, the batched writer, read queries and the analytics
over stored data.

Imports nothing else of xidwatch; every other package reaches SQLite through here. This
package imports nothing itself: import the module you need.
"""
