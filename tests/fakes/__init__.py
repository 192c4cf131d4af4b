"""Backend doubles the tests and benchmarks run against: Elasticsearch, an OTLP receiver, Zipkin.

Each double lives in its own module, named for what it fakes (``tests.fakes.fake_elasticsearch``),
so importing one never pulls in the dependencies of another.
"""
