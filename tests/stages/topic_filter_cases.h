#pragma once
// Filter/topic pairs with the MQTT answer, shared by topic_filter_test (in
// memory) and table_reader_integration_test (PostgreSQL's regex).

namespace evpipe::stages {

struct match_case {
  const char* filter;
  const char* topic;
  bool match;
};

inline const match_case topic_cases[] = {
    {"a/b", "a/b", true},          {"a/b", "a/b/c", false},       {"a/b", "a", false},
    {"a/+", "a/b", true},          {"a/+", "a/b/c", false},       {"a/+", "a", false},
    {"a/+", "a/", true},           {"+/b", "a/b", true},          {"+", "a", true},
    {"+", "a/b", false},           {"#", "a/b/c", true},          {"#", "a", true},
    {"a/#", "a", true},            {"a/#", "a/b", true},          {"a/#", "a/b/c", true},
    {"a/#", "ab", false},          {"a/#", "b/a", false},         {"a/+/#", "a/b", true},
    {"tracker/events/#", "tracker/events/projects/created", true},
    {"tracker/events/#", "tracker/dlq/x", false},
    {"#", "$SYS/x", false},        {"+/x", "$SYS/x", false},      {"$SYS/#", "$SYS/x", true},
    {"a.b", "axb", false},         {"a.b", "a.b", true},          {"a(b)", "a(b)", true},
    {"a\\b", "a\\b", true},        {"a'b", "a'b", true},          {"/", "/", true},
    {"+/+", "/", true},            {"a//b", "a//b", true},        {"a/+/b", "a//b", true},
};

}  // namespace evpipe::stages
