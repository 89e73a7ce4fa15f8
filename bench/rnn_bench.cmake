# The benchmark library shared by bench/bench_suite and the `rnnkit bench`
# subcommand. Included from bench/CMakeLists.txt and from the root's apps block,
# whichever comes first defines it.
if(NOT TARGET rnnkit_bench)
  set(RNNKIT_BENCH_DIR ${CMAKE_CURRENT_LIST_DIR})
  # The PyTorch script travels inside the binary, so an installed rnnkit can run it.
  file(READ ${RNNKIT_BENCH_DIR}/py/torch_bench.py RNNKIT_TORCH_BENCH_PY)
  configure_file(${RNNKIT_BENCH_DIR}/torch_bench_script.h.in
                 ${PROJECT_BINARY_DIR}/generated/bench/torch_bench_script.h @ONLY)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS
               ${RNNKIT_BENCH_DIR}/py/torch_bench.py ${RNNKIT_BENCH_DIR}/torch_bench_script.h.in)
  add_library(rnnkit_bench STATIC
    ${RNNKIT_BENCH_DIR}/rnn_bench.cpp
    ${RNNKIT_BENCH_DIR}/problem.cpp
    ${RNNKIT_BENCH_DIR}/onednn_rnn.cpp
    ${RNNKIT_BENCH_DIR}/torch_runner.cpp
    ${RNNKIT_BENCH_DIR}/torch_script.cpp)
  target_include_directories(rnnkit_bench
    PUBLIC ${RNNKIT_BENCH_DIR}
    PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_BINARY_DIR}/generated/bench)
  target_link_libraries(rnnkit_bench PUBLIC rnnkit::rnnkit PRIVATE DNNL::dnnl nlohmann_json::nlohmann_json)
  target_compile_options(rnnkit_bench PRIVATE -Wall -Wextra -Wno-unused-parameter)
endif()
