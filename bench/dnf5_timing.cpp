// A measuring libdnf5 plugin for bench/dnf5_bench.py (not for users): appends
// "start <t>" at pre_transaction and "end <t>" at post_transaction (monotonic
// clock) to the file named in its configuration (`file = PATH`).  libdnf5
// runs plugins' hooks in the order it loaded them (by name: "cow" before
// "rpmtiming"), so with the cow plugin "start" comes after its transcoding.
#include <libdnf5/base/transaction.hpp>
#include <libdnf5/conf/config_parser.hpp>
#include <libdnf5/plugin/iplugin.hpp>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <exception>
#include <string>

namespace {

constexpr const char * NAME = "rpmtiming";
constexpr libdnf5::PluginAPIVersion API{.major = 2, .minor = 1};
const char * const ATTRS[]{nullptr};
std::exception_ptr last_exception;

class Timing final : public libdnf5::plugin::IPlugin2_1 {
public:
    Timing(libdnf5::plugin::IPluginData & data, libdnf5::ConfigParser & parser) : IPlugin2_1(data) {
        if (parser.has_option("main", "file"))
            file = parser.get_value("main", "file");
    }
    libdnf5::PluginAPIVersion get_api_version() const noexcept override { return API; }
    const char * get_name() const noexcept override { return NAME; }
    libdnf5::plugin::Version get_version() const noexcept override { return {0, 1, 0}; }
    const char * const * get_attributes() const noexcept override { return ATTRS; }
    const char * get_attribute(const char *) const noexcept override { return nullptr; }
    void pre_transaction(const libdnf5::base::Transaction &) override { mark("start"); }
    void post_transaction(const libdnf5::base::Transaction &) override { mark("end"); }

private:
    void mark(const char * what) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (FILE * f = std::fopen(file.c_str(), "a")) {
            std::fprintf(f, "%s %ld.%09ld\n", what, static_cast<long>(ts.tv_sec), ts.tv_nsec);
            std::fclose(f);
        }
    }
    std::string file = "/dev/null";
};

}  // namespace

extern "C" {
libdnf5::PluginAPIVersion libdnf_plugin_get_api_version(void) {
    return API;
}
const char * libdnf_plugin_get_name(void) {
    return NAME;
}
libdnf5::plugin::Version libdnf_plugin_get_version(void) {
    return {0, 1, 0};
}
libdnf5::plugin::IPlugin * libdnf_plugin_new_instance(
    libdnf5::LibraryVersion, libdnf5::plugin::IPluginData & data, libdnf5::ConfigParser & parser) try {
    return new Timing(data, parser);
} catch (...) {
    last_exception = std::current_exception();
    return nullptr;
}
void libdnf_plugin_delete_instance(libdnf5::plugin::IPlugin * p) {
    delete p;
}
std::exception_ptr * libdnf_plugin_get_last_exception(void) {
    return &last_exception;
}
}
