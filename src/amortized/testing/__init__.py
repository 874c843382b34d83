"""Fixtures that exist for the project's tests and benchmarks, not for users: models and data
built from a seed where nothing real can be downloaded. Nothing in the library imports this
package, and its contents may change without notice.
"""
