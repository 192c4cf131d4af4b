"""Test doubles that ship with Mesh Mixer, for its own tests and for plugin authors.

Each double lives in its own module, named for what it fakes (``mixer.testing.fake_elasticsearch``),
so importing one never pulls in the dependencies of another.
"""
